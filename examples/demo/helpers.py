"""Helpers for the demo course: reading its data and drawing a plot.

The plot is an SVG that Jupyter shows inline: no plotting library needed.
"""

import csv
from html import escape


def read_table(path):
    """The rows of a CSV file, as dicts of floats (where they are numbers)."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text):
    try:
        return float(text)
    except ValueError:
        return text


class LinePlot:
    """Lines of (x, y) points; Jupyter displays it (it has _repr_svg_)."""

    COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")

    def __init__(self, title, width=480, height=260):
        self.title, self.width, self.height = title, width, height
        self.lines = []

    def add(self, label, xs, ys):
        self.lines.append((label, list(xs), list(ys)))
        return self

    def _repr_svg_(self):
        xs = [x for _, lx, _ in self.lines for x in lx]
        ys = [y for _, _, ly in self.lines for y in ly]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        pad = 30

        def at(x, y):
            px = pad + (x - x0) / ((x1 - x0) or 1) * (self.width - 2 * pad)
            py = self.height - pad - (y - y0) / ((y1 - y0) or 1) * (self.height - 2 * pad)
            return f"{px:.1f},{py:.1f}"

        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                 f'height="{self.height}" font-family="sans-serif" font-size="12">',
                 f'<text x="{pad}" y="18">{escape(self.title)}</text>',
                 f'<text x="2" y="{pad + 4}">{y1:g}</text>',
                 f'<text x="2" y="{self.height - pad}">{y0:g}</text>']
        for i, (label, lx, ly) in enumerate(self.lines):
            colour = self.COLOURS[i % len(self.COLOURS)]
            points = " ".join(at(x, y) for x, y in zip(lx, ly))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{points}"/>')
            parts.append(f'<text x="{self.width - 90}" y="{20 + 14 * i}" fill="{colour}">'
                         f'{escape(label)}</text>')
        return "\n".join(parts + ["</svg>"])
