"""The files nbunits ships beside its code: units/, nginx/, images/, cockpit/.

They are installed with the package (nbunits/data/ links to the repository's
folders) and read from there by the generator and the admin's tools.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable


def data_dir() -> Traversable:
    return resources.files("nbunits") / "data"


def data_file(*parts: str) -> str:
    """The text of a shipped file, e.g. data_file("nginx", "nbunits-http.conf")."""
    return data_dir().joinpath(*parts).read_text()


def unit_files() -> Traversable:
    return data_dir() / "units"


def static_units() -> Iterator[Traversable]:
    """The unit files installed as they are (not per course)."""
    return (f for f in unit_files().iterdir() if f.is_file() and f.name.startswith("nbunits")
            and f.name.rsplit(".", 1)[-1] in ("service", "socket", "timer", "slice"))


def catalog_file() -> Traversable:
    """The journal catalog of nbunits' events (events.py)."""
    return unit_files() / "catalog" / "nbunits.catalog"


def real_path(*parts: str) -> str:
    """A shipped file's path on disk (for a unit to name, e.g. to mount it)."""
    return os.path.realpath(str(unit_files().joinpath(*parts)))
