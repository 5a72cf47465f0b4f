"""docs/BENCHMARKS.md's figures come from the runs' JSON, never typed (issue 27):
each generated block is exactly what `bench/run --table-from` prints for the JSON it
names, and each reference run measured nbunits, the floor and the peer together."""

import json
from pathlib import Path

from bench.__main__ import BLOCK_END, BLOCK_START, DOCS, REFERENCE_PARTS, render

REPO = Path(__file__).resolve().parents[2]


def blocks() -> list[tuple[str, str]]:
    text, found = DOCS.read_text(), []
    while BLOCK_START in text:
        _, _, rest = text.partition(BLOCK_START)
        source, _, rest = rest.partition(" -->\n")
        body, _, text = rest.partition(BLOCK_END)
        found.append((source, body.rstrip("\n")))
    return found


def test_benchmarks_tables_are_printed_from_the_kept_json():
    found = blocks()
    assert found, "docs/BENCHMARKS.md shows no reference run"
    for source, body in found:
        assert source.startswith("bench/results/reference-"), source
        assert body == render(json.loads((REPO / source).read_text()), source), (
            f"{source}: the table was edited by hand; run bench/run --update-docs")


def test_each_reference_run_measured_nbunits_the_floor_and_the_peer_together():
    runs = sorted((REPO / "bench" / "results").glob("reference-*.json"))
    assert runs
    for path in runs:
        r = json.loads(path.read_text())
        assert r["reference"] is True and "error" not in r, path.name
        for part in REFERENCE_PARTS:
            assert part in r and "error" not in r[part], f"{path.name}: {part}"
        assert r["code"]["commit"] and r["peer"]["versions"]["jupyterhub"] != "?"
    # The latest reference run is the one the page shows first.
    assert blocks()[0][0] == f"bench/results/{runs[-1].name}"
