"""Images in the shared store, as the generator needs them: found, then recorded.

The generator may not read /var (systemd.generator(7)), where the store is; so the
admin's tools read each image's layers and configuration from the store here
(read only: podman's own JSON files) and record them in /etc/nbunits/images.json
(core/rootfs.py), at `nbunits install`, `course add/update/remove` and `image build`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from nbunits.core.config import DEFAULT_IMAGE, Settings, list_courses, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.files import write_atomic
from nbunits.core.rootfs import Rootfs, image_key


def resolve(store: Path, image: str, mounts: Path | None = None) -> Rootfs:
    """The unpacked tree and configuration of `image` in the shared store."""
    names = {image_key(image)}
    found = [i for i in _json(store / "overlay-images" / "images.json")
             if names & set(i.get("names", []))]
    if not found:
        raise NbunitsError(Code.UNKNOWN_IMAGE, f"image {image} is not in {store}",
                           hint="nbunits image build --image NAME builds it")
    entry = found[0]
    layers = {layer["id"]: layer for layer in _json(store / "overlay-layers" / "layers.json")}
    chain: list[Path] = []
    layer_id = entry.get("layer", "")
    while layer_id:
        layer = layers.get(layer_id)
        if layer is None or len(chain) > 125:
            raise NbunitsError(Code.BAD_IMAGE, f"image {image}: layer {layer_id} is missing",
                               hint=f"rebuild it (nbunits image build --image {image})")
        chain.append(store / "overlay" / layer_id / "diff")
        layer_id = layer.get("parent", "")
    key = "=" + base64.b64encode(f"sha256:{entry['id']}".encode()).decode()
    config = _json(store / "overlay-images" / entry["id"] / key).get("config", {})
    env, workdir = tuple(config.get("Env") or ()), config.get("WorkingDir") or "/"
    entrypoint = tuple(config.get("Entrypoint") or ())
    if len(chain) == 1:
        return Rootfs(chain[0], env, workdir, entrypoint)
    return Rootfs((mounts or Settings().rootfs_mounts) / entry["id"], env, workdir,
                  entrypoint, tuple(chain))


def record(settings: Settings) -> list[str]:
    """Record every image a course runs (and the base image) in /etc/nbunits/images.json;
    returns the problems (an image missing from the store), one per image."""
    images = {DEFAULT_IMAGE}
    for name in list_courses(settings):
        try:
            images.add(load_course(settings, name).image)
        except NbunitsError:
            continue  # the generator skips it and says why
    found, problems = {}, []
    for image in sorted(images):
        try:
            found[image_key(image)] = resolve(settings.image_store, image).to_json()
        except NbunitsError as exc:
            problems.append(str(exc))
    write_atomic(settings.images_file, json.dumps(found, indent=1, sort_keys=True) + "\n", 0o644)
    return problems


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NbunitsError(Code.BAD_IMAGE_STORE, f"cannot read {path}: {exc}",
                           hint="is the image store in place (nbunits image build)?") from exc
