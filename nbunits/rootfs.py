"""A course's image as a read-only root tree that every student's podman runs.

Students have no subordinate ids (users.py): podman maps the container's root to
the student's uid alone. It can then not create a container layer over an image
(the layer's owner, the image's root, is no uid in that namespace), so each
container runs on the image's own unpacked layer, `podman run --rootfs DIR
--read-only`: the shared store's layer directory, root-owned and read-only to
students (files of other uids read as nobody in the container, as before). No
overlay mount, no per-student layer: less work per start and a few KB per student.

An image of several layers is stacked by a read-only overlay mount that root
makes (no upper layer, nothing to write): the generator writes a mount unit for
/run/nbunits/rootfs/<image id> and the container units require it.

`--rootfs` ignores the image's configuration, so the generator reads it here from
the store (read only; podman's own JSON files) and the unit passes it on: the
environment, the working directory and the entrypoint.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NbunitsError

MOUNTS = Path("/run/nbunits/rootfs")


@dataclass(frozen=True)
class Rootfs:
    path: Path  # the tree the containers run on
    env: tuple[str, ...]
    workdir: str
    entrypoint: tuple[str, ...]
    layers: tuple[Path, ...] = ()  # several: top first, stacked at `path` by a mount unit

    @property
    def mount_unit(self) -> str:
        """The name systemd gives the mount at `path` (no character there needs escaping)."""
        return str(self.path).strip("/").replace("/", "-") + ".mount"


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
    chain: list[Path] = []
    layer_id = entry.get("layer", "")
    while layer_id:
        layer = layers.get(layer_id)
        if layer is None or len(chain) > 125:
            raise NbunitsError("bad_image", f"image {image}: layer {layer_id} is missing",
                               hint=f"rebuild it (nbunits image build --image {image})")
        chain.append(store / "overlay" / layer_id / "diff")
        layer_id = layer.get("parent", "")
    key = "=" + base64.b64encode(f"sha256:{entry['id']}".encode()).decode()
    config = _json(store / "overlay-images" / entry["id"] / key).get("config", {})
    env, workdir = tuple(config.get("Env") or ()), config.get("WorkingDir") or "/"
    entrypoint = tuple(config.get("Entrypoint") or ())
    if len(chain) == 1:
        return Rootfs(chain[0], env, workdir, entrypoint)
    return Rootfs(MOUNTS / entry["id"], env, workdir, entrypoint, tuple(chain))


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
