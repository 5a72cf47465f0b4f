"""A course's image as a read-only root tree that every student's podman runs.

Students have no subordinate ids (users.py): podman maps the container's root to
the student's uid alone. It can then not create a container layer over an image
(the layer's owner, the image's root, is no uid in that namespace), so each
container runs on the image's own unpacked layer, `podman run --rootfs DIR
--read-only`: the shared store's layer directory, root-owned and read-only to
students (files of other uids read as nobody in the container, as before). No
overlay mount, no per-student layer: less work per start and a few KB per student.

`--rootfs` ignores the image's configuration, so the generator reads it here from
the store (read only; podman's own JSON files) and the unit passes it on: the
environment, the working directory and the entrypoint. Images must be one layer
(`images/build` makes them so; `podman build --squash-all` does).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NbunitsError


@dataclass(frozen=True)
class Rootfs:
    path: Path
    env: tuple[str, ...]
    workdir: str
    entrypoint: tuple[str, ...]


def resolve(store: Path, image: str) -> Rootfs:
    """The unpacked tree and configuration of `image` in the shared store."""
    name = image if "/" in image.split(":")[0] or "." in image else f"localhost/{image}"
    names = {name, name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"}
    found = [i for i in _json(store / "overlay-images" / "images.json")
             if names & set(i.get("names", []))]
    if not found:
        raise NbunitsError("unknown_image", f"image {image} is not in {store}",
                           hint="nbunits image build --image NAME builds it")
    entry = found[0]
    layers = {layer["id"]: layer for layer in _json(store / "overlay-layers" / "layers.json")}
    layer = layers.get(entry.get("layer", ""))
    if layer is None or layer.get("parent"):
        raise NbunitsError("bad_image", f"image {image} has more than one layer",
                           hint="students' containers run on one unpacked layer: build it "
                                "with images/build or podman build --squash-all")
    key = "=" + base64.b64encode(f"sha256:{entry['id']}".encode()).decode()
    config = _json(store / "overlay-images" / entry["id"] / key).get("config", {})
    return Rootfs(store / "overlay" / layer["id"] / "diff", tuple(config.get("Env") or ()),
                  config.get("WorkingDir") or "/", tuple(config.get("Entrypoint") or ()))


def unit_words(words: tuple[str, ...]) -> str:
    """Words for a unit's ExecStart=, each quoted as systemd reads them back."""
    return " ".join('"' + w.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
                    .replace("$", "$$") + '"' for w in words)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NbunitsError("bad_image_store", f"cannot read {path}: {exc}",
                           hint="is the image store in place (nbunits image build)?") from exc
