"""axe-core, the accessibility engine, run in the tests' Chromium on nbunits' pages.

The npm package's tarball is fetched once from the npm registry (pinned version,
checked against its sha256) into the machine's cache, $NBUNITS_CACHE_DIR or
/var/cache/nbunits, as images/build caches what it fetches; a fresh clone (CI)
fetches it on its first run.
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

VERSION = "4.14.1"
URL = f"https://registry.npmjs.org/axe-core/-/axe-core-{VERSION}.tgz"
SHA256 = "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745"
# WCAG 2.0 and 2.1, levels A and AA: the rules nbunits' pages must pass.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _tarball() -> bytes:
    cache = Path(os.environ.get("NBUNITS_CACHE_DIR", "/var/cache/nbunits")) / "axe"
    path = cache / f"axe-core-{VERSION}.tgz"
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256:
        return path.read_bytes()
    context = ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt")
    with urllib.request.urlopen(URL, timeout=60, context=context) as resp:  # noqa: S310
        data: bytes = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == SHA256, f"{URL}: sha256 {digest}, expected {SHA256}"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{path.name}.tmp").write_bytes(data)
    (cache / f"{path.name}.tmp").rename(path)
    return data


def source() -> str:
    """axe.min.js, to add to a page."""
    with tarfile.open(fileobj=io.BytesIO(_tarball()), mode="r:gz") as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None
        return member.read().decode()


def violations(page: Any, script: str, include: list[str] | None = None) -> list[str]:
    """axe's WCAG 2.1 AA violations on `page` (a Playwright Page or Frame), within the
    `include` selectors if given, one line each: rule id, impact, targets, summary.
    The page's context must bypass its CSP (bypass_csp=True): nbunits' pages allow no
    script of their own."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=script)
    found = page.evaluate(
        """async ([include, tags]) => {
            const context = include ? {include: include.map(s => [s])} : document;
            const result = await axe.run(context, {runOnly: {type: 'tag', values: tags},
                                                   resultTypes: ['violations']});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' ')),
                summary: v.nodes.map(n => n.failureSummary).join(' | ')}));
        }""", [include, WCAG_AA])
    return [f"{v['id']} ({v['impact']}) at {', '.join(v['targets'])}: {v['help']}. {v['summary']}"
            for v in found]
