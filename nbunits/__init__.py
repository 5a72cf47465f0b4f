"""nbunits: per-student Jupyter notebooks as systemd units running rootless podman."""

__version__ = "0.1.0"
