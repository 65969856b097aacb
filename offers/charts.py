"""Small SVG charts drawn on the server, for the admin's pages of models: no script needed.

Both axes of these charts run from 0 to 1 (rates and probabilities), with the diagonal drawn as
the reference: a model that ranks no better than chance on a ROC curve, a perfectly calibrated
model on a calibration plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Okabe and Ito's palette: told apart with any colour vision. One per model compared (at most 5).
PALETTE: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")

SIZE: Final = 360  # the plot's square, in SVG units
LEFT, TOP, RIGHT, BOTTOM = 48, 12, 14, 44
TICKS: Final = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Series:
    """One model's line: `points` in the unit square; `counts` (calibration) size its dots."""

    label: str
    colour: str
    points: Sequence[tuple[float, float]]
    counts: Sequence[int] = ()


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def unit_chart(
    series: Sequence[Series], *, name: str, title: str, x_label: str, y_label: str, diagonal: str
) -> SafeString:
    """An SVG chart of `series` on [0, 1] x [0, 1], with the diagonal labelled `diagonal`.

    `name` goes to `data-chart` (for tests and styles); each line carries `data-model`.
    """
    width, height = LEFT + SIZE + RIGHT, TOP + SIZE + BOTTOM
    grid = format_html_join(
        "",
        '<line class="grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<line class="grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>'
        '<text class="tick" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
        (
            (
                _x(t),
                _y(0),
                _x(t),
                _y(1),
                _x(0),
                _y(t),
                _x(1),
                _y(t),
                _x(t),
                _y(0) + 16,
                f"{t:g}",
                _x(0) - 6,
                _y(t),
                f"{t:g}",
            )
            for t in TICKS
        ),
    )
    lines = format_html_join("", "{}", ((_line(s),) for s in series if s.points))
    return format_html(
        '<svg class="lo-chart" data-chart="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
        'role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}"
        '<line class="diagonal" x1="{}" y1="{}" x2="{}" y2="{}"><title>{}</title></line>'
        '<rect class="frame" x="{}" y="{}" width="{}" height="{}"/>{}'
        '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>'
        '<text class="axis" transform="translate(12 {}) rotate(-90)" text-anchor="middle">{}</text>'
        "</svg>",
        name,
        width,
        height,
        width,
        height,
        title,
        title,
        grid,
        _x(0),
        _y(0),
        _x(1),
        _y(1),
        diagonal,
        LEFT,
        TOP,
        SIZE,
        SIZE,
        lines,
        _x(0.5),
        height - 8,
        x_label,
        _y(0.5),
        y_label,
    )


def _line(series: Series) -> SafeString:
    path = " ".join(f"{_x(x):.1f},{_y(y):.1f}" for x, y in series.points)
    dots: SafeString | str = ""
    if series.counts:
        largest = max(series.counts) or 1
        dots = format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="{}" fill="{}"><title>{}</title></circle>',
            (
                (
                    f"{_x(x):.1f}",
                    f"{_y(y):.1f}",
                    f"{2.5 + 4.5 * math.sqrt(count / largest):.1f}",
                    series.colour,
                    f"{series.label}: mean risk {x:.2f}, {y:.0%} abandoned, {count:,} decisions",
                )
                for (x, y), count in zip(series.points, series.counts, strict=True)
            ),
        )
    return format_html(
        '<g data-model="{}"><polyline points="{}" fill="none" stroke="{}" stroke-width="2">'
        "<title>{}</title></polyline>{}</g>",
        series.label,
        path,
        series.colour,
        series.label,
        dots,
    )


def _x(value: float) -> float:
    return LEFT + _clamp(value) * SIZE


def _y(value: float) -> float:
    return TOP + (1 - _clamp(value)) * SIZE


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
