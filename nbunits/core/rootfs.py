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

`--rootfs` ignores the image's configuration, so the unit passes it on: the
environment, the working directory and the entrypoint. They come from the store
(podman's own JSON files, read by nbunits/admin/images.py), recorded with the
layers' paths in /etc/nbunits/images.json by `nbunits install`, `course add/update`
and `image build`; the generator reads that record, never the store in /var
(systemd.generator(7): /var may not be mounted yet when generators run).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError


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

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else [str(x) for x in v]
                    if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rootfs:
        return cls(Path(data["path"]), tuple(data["env"]), str(data["workdir"]),
                   tuple(data["entrypoint"]), tuple(Path(p) for p in data["layers"]))


def image_key(image: str) -> str:
    """An image name as podman completes it: localhost/NAME:latest."""
    name = image if "/" in image.split(":")[0] or "." in image else f"localhost/{image}"
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def load(settings: Settings, image: str) -> Rootfs:
    """The recorded tree and configuration of `image` (/etc/nbunits/images.json)."""
    path = settings.images_file
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise NbunitsError(Code.BAD_IMAGE_STORE, f"cannot read {path}: {exc}",
                           hint="nbunits install records the images again") from exc
    entry = data.get(image_key(image)) if isinstance(data, dict) else None
    if entry is None:
        raise NbunitsError(Code.UNKNOWN_IMAGE, f"image {image} is not in the store "
                           f"(as recorded in {path})",
                           hint="nbunits image build --image NAME builds it; nbunits "
                                "install records the images of the store again")
    try:
        return Rootfs.from_json(entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise NbunitsError(Code.BAD_IMAGE_STORE, f"{path}: {image}: {exc!r}",
                           hint="nbunits install records the images again") from exc


def unit_words(words: tuple[str, ...]) -> str:
    """Words for a unit's ExecStart=, each quoted as systemd reads them back. A control
    character is written as a C escape, which systemd decodes: a raw newline (an image's
    configuration is a course's word) would end the setting mid-word, and systemd
    would refuse the whole unit (measured: "bad unit file setting")."""
    return " ".join('"' + _CONTROL_RE.sub(lambda m: f"\\x{ord(m[0]):02x}", w.replace("\\", "\\\\")
                    .replace('"', '\\"').replace("%", "%%").replace("$", "$$")) + '"'
                    for w in words)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
