"""The generator's entry point: every course's units into systemd's folder."""

from __future__ import annotations

import sys
from pathlib import Path

from nbunits.core.config import Settings, list_courses, load_course, load_settings
from nbunits.core.errors import NbunitsError
from nbunits.generator.render import render_course


def generate(settings: Settings, out: Path) -> list[str]:
    """Write every course's units into `out`; returns the problems, one per course."""
    problems = []
    for name in list_courses(settings):
        try:
            rendered = render_course(load_course(settings, name), settings)
        except NbunitsError as exc:
            problems.append(str(exc))
            continue
        for filename, text in rendered.items():
            (out / filename).write_text(text)
    return problems


def main() -> None:
    """systemd generator entry point: nbunits-generator NORMAL_DIR [EARLY_DIR LATE_DIR]."""
    if len(sys.argv) < 2:
        sys.exit("usage: nbunits-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
    try:
        problems = generate(load_settings(), Path(sys.argv[1]))
    except NbunitsError as exc:
        problems = [str(exc)]
    for problem in problems:
        # Generators' stderr goes to the kernel log / journal.
        print(f"nbunits-generator: skipped: {problem}", file=sys.stderr)


if __name__ == "__main__":
    main()
