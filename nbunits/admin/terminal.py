"""Text for an admin's terminal, whoever wrote it.

Much of what the admin's commands print was written by someone else: a student (their
notebooks' cells and outputs, their files' names), an LMS (ids), a course's repository
(notebook names, a title). A terminal obeys the control characters in it: ESC starts a
sequence that can set the window's title, clear the screen, move the cursor over the
lines above or, on some terminals, answer back into the shell's input; C1 controls
(U+0080-U+009F, CSI among them) do the same on terminals that read them, a carriage
return writes over the start of its line, and the bidirectional overrides make text
read other than it is. Every command prints such text through `escape` (docs/security.md,
"an admin's terminal"): each of those characters becomes a visible escape (`\\x1b`,
`\\r`, `\\u202e`), nothing is dropped.
"""

from __future__ import annotations

import re

# C0 but tab and newline (below), DEL, C1; the bidirectional embeddings, overrides and
# isolates and the directional marks; lone surrogates (undecodable bytes of a file name).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ALWAYS = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_IN_A_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape(text: str, *, lines: bool = False) -> str:
    """`text` with every control character made visible. `lines`: multi-line text (a
    notebook shown whole), where tab and newline stay as they are; otherwise (a table's
    cell, a name) they are escaped too, so that one value stays on one line."""
    return (_ALWAYS if lines else _IN_A_LINE).sub(_visible, text)
