"""Chart geometry for server-rendered inline SVG: numbers in, path strings and labels out.

No JavaScript library and no CDN: the templates draw ``<path d=...>`` and
``<rect>`` from what these functions return (all numbers, so nothing needs
escaping beyond what Jinja does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

WIDTH, HEIGHT = 380, 150     # about the size a chart is drawn at, so the 11px labels stay legible
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 34, 10, 10, 22


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0 or math.isnan(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10 ** exponent
        if candidate >= value * 0.999:
            return candidate
    return 10 ** (exponent + 1)


def short_number(value: float) -> str:
    """1.2k, 3.4M, 0.5, 12 — for axis labels."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if value >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if value and value < 10 and value != int(value):
        return f"{value:.3g}"
    return f"{value:.0f}"


@dataclass
class Line:
    """One series: the line's path, the area under it (optional), a CSS class and a legend."""
    name: str
    css: str
    path: str
    area: str | None = None
    last: float | None = None


@dataclass
class Chart:
    """An inline-SVG line chart."""
    title: str
    unit: str
    lines: list[Line]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str, str]]   # x, label, text-anchor
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT
    plot: dict = field(default_factory=dict)


def _x(i: int, count: int) -> float:
    span = WIDTH - PAD_LEFT - PAD_RIGHT
    return PAD_LEFT + (span * i / max(count - 1, 1))


def _y(value: float, top: float) -> float:
    span = HEIGHT - PAD_TOP - PAD_BOTTOM
    return PAD_TOP + span * (1 - min(value / top, 1.0))


def _paths(values: list[float | None], top: float, area: bool) -> tuple[str, str | None]:
    """An SVG path through the points; a gap (None) starts a new segment."""
    count = len(values)
    segments: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, value in enumerate(values):
        if value is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append((round(_x(i, count), 1), round(_y(value, top), 1)))
    if current:
        segments.append(current)
    line = " ".join("M" + " L".join(f"{x},{y}" for x, y in seg) for seg in segments)
    if not area:
        return line, None
    base = round(_y(0, top), 1)
    fill = " ".join(f"M{seg[0][0]},{base} L" + " L".join(f"{x},{y}" for x, y in seg) + f" L{seg[-1][0]},{base} Z"
                    for seg in segments)
    return line, fill


def time_label(when: datetime, long: bool) -> str:
    return when.strftime("%b %d") if long else when.strftime("%H:%M")


def line_chart(title: str, unit: str, times: list[datetime], series: list[tuple[str, str, list[float | None]]],
               long_range: bool = False) -> Chart:
    """A chart of one or more series over ``times``; the first series gets a filled area."""
    peak = max((v for _, _, values in series for v in values if v is not None), default=0.0)
    top = nice_ceiling(peak)
    lines = []
    for index, (name, css, values) in enumerate(series):
        path, area = _paths(values, top, area=index == 0)
        last = next((v for v in reversed(values) if v is not None), None)
        lines.append(Line(name, css, path, area, last))
    y_ticks = [(round(_y(top * f, top), 1), short_number(top * f)) for f in (0, 0.5, 1)]
    count = len(times)
    picks = sorted({0, count // 3, 2 * count // 3, count - 1}) if count else []
    x_ticks = [(round(_x(i, count), 1), time_label(times[i], long_range),
                "start" if i == 0 else "end" if i == count - 1 else "middle") for i in picks]
    return Chart(title, unit, lines, y_ticks, x_ticks, empty=peak == 0 and not any(
        v is not None for _, _, values in series for v in values),
        plot={"left": PAD_LEFT, "right": WIDTH - PAD_RIGHT, "top": PAD_TOP, "bottom": HEIGHT - PAD_BOTTOM})


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


def bar_chart(values: list[float], labels: list[str], width: int = 560, height: int = 110) -> dict:
    """Bars for a few dozen values (tokens per day); labels become tooltips."""
    left = 48   # room for labels such as 12.5M
    top = nice_ceiling(max(values, default=0))
    span_w = width - left - PAD_RIGHT
    span_h = height - PAD_TOP - PAD_BOTTOM
    step = span_w / max(len(values), 1)
    bars = []
    for i, (value, label) in enumerate(zip(values, labels)):
        h = span_h * min(value / top, 1.0)
        bars.append(Bar(round(left + i * step + step * 0.15, 1), round(PAD_TOP + span_h - h, 1),
                        round(step * 0.7, 1), round(max(h, 0.0), 1), label))
    return {"bars": bars, "width": width, "height": height, "baseline": PAD_TOP + span_h,
            "y_ticks": [(round(PAD_TOP + span_h * (1 - f), 1), short_number(top * f)) for f in (0, 0.5, 1)],
            "left": left, "right": width - PAD_RIGHT}
