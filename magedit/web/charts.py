"""The edit's progress as two small line charts drawn on the server as inline SVG: the loss and
the in-mask attention ratio, each on its own readable scale (the loss is about 2, the ratio about
0.01: on one axis the ratio would be a flat line). Pure functions of numbers: no user text."""

from __future__ import annotations

import math
from collections.abc import Sequence

WIDTH, HEIGHT = 220, 120  # the SVG's own units; it scales to its box (about 200 px wide)
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 46, 8, 24, 22
# Per series: (stroke colour, label). Distinct hues, readable on white and for most colour vision.
LOSS = ("#2563eb", "loss")
RATIO = ("#ea580c", "in-mask ratio")


def _ticks(low: float, high: float) -> tuple[float, float]:
    """The y range shown: the data's, widened a little, never empty."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _number(value: float, other: float) -> str:
    """An axis label: enough digits to tell ``value`` from ``other``, the other end."""
    for digits in range(3, 8):
        if f"{value:.{digits}g}" != f"{other:.{digits}g}":
            return f"{value:.{digits}g}"
    return f"{value:.3g}"


def _chart(
    title: str,
    series: Sequence[tuple[tuple[str, str], Sequence[tuple[float, float]], bool]],
    x_max: float,
    chart_id: str,
) -> str:
    """One chart: ``series`` is ((colour, label), [(x, y), ...], draw_points) each."""
    points = [p for _, data, _ in series for p in data if math.isfinite(p[1])]
    if not points:
        body = (
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2 + 4}" text-anchor="middle" '
            'class="magedit-chart-empty">appears when an edit runs</text>'
        )
        low, high = 0.0, 1.0
    else:
        low, high = _ticks(min(y for _, y in points), max(y for _, y in points))
        body = ""
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    x_max = max(x_max, 1.0)

    def xy(x: float, y: float) -> tuple[float, float]:
        return (  # step 1 at the left end, the last step at the right
            PAD_LEFT + inner_w * min(max((x - 1) / max(x_max - 1, 1.0), 0.0), 1.0),
            PAD_TOP + inner_h * (1 - (y - low) / (high - low)),
        )

    for (colour, label), data, dots in series:
        shown = [xy(x, y) for x, y in data if math.isfinite(y)]
        if len(shown) >= 2:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in shown)
            body += (
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6" '
                f'data-series="{label}" />'
            )
        if dots:
            body += "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8" fill="{colour}" '
                f'data-series="{label}" />'
                for x, y in shown
            )
    axes = (
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{HEIGHT - PAD_BOTTOM}" '
        'class="magedit-axis" />'
        f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - PAD_RIGHT}" '
        f'y2="{HEIGHT - PAD_BOTTOM}" class="magedit-axis" />'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" text-anchor="end">{_number(high, low)}</text>'
        f'<text x="{PAD_LEFT - 4}" y="{HEIGHT - PAD_BOTTOM}" text-anchor="end">'
        f"{_number(low, high)}</text>"
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 6}">step 1</text>'
        f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{x_max:g}</text>"
    )
    return (
        f'<svg id="{chart_id}" class="magedit-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{PAD_LEFT}" y="12" class="magedit-chart-title">'
        f'<tspan fill="{series[0][0][0]}">■</tspan> {title}</text>'
        f"{axes}{body}</svg>"
    )


def progress_charts(steps: Sequence[tuple[int, float, float]], total: int) -> str:
    """HTML of the two charts. ``steps``: (step, loss, in-mask ratio) per denoising step (the
    MAG iterations' losses, which add the negative word's term, are in the status line);
    ``total``: the steps of the edit (the x axis' end)."""
    loss = _chart(
        "Loss per step", [(LOSS, [(s, v) for s, v, _ in steps], True)], total, "magedit-chart-loss"
    )
    ratio = _chart(
        "In-mask ratio",
        [(RATIO, [(s, r) for s, _, r in steps], True)],
        total,
        "magedit-chart-ratio",
    )
    return f'<div class="magedit-charts">{loss}{ratio}</div>'
