"""Bar charts as inline SVG, drawn on the server: no chart library, no script, and the page
shows its figures even with JavaScript off.

Values may be exact Decimals (credits); they become floats only for pixel positions, never
for the numbers shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from html import escape

from markupsafe import Markup

Number = int | Decimal


@dataclass(frozen=True)
class Series:
    name: str
    color: str


@dataclass(frozen=True)
class Bar:
    label: str  # shown under the bar (some of them) and in its tooltip
    values: tuple[Number, ...]  # one per series, stacked bottom-up


WIDTH, HEIGHT = 420, 180
LEFT, BOTTOM, TOP = 8, 20, 16  # room for the axis labels


def bar_chart(title: str, series: tuple[Series, ...], bars: list[Bar], unit: str = "") -> Markup:
    """A stacked bar chart; each bar's tooltip lists its exact values."""
    # Whole numbers stay ints (shown with thousands separators), credits stay Decimals.
    peak: Number = max((sum(bar.values, 0) for bar in bars), default=0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="11" class="axis">{escape(plain(peak))}{escape(unit)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" '
        'class="baseline"/>',
    ]
    if peak == 0:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="empty" text-anchor="middle">'
            "No calls in this window</text>"
        )
    slot = (WIDTH - LEFT) / max(len(bars), 1)
    plot = HEIGHT - BOTTOM - TOP
    every = max(1, len(bars) // 6)  # about six labels along the axis
    for i, bar in enumerate(bars):
        x = LEFT + i * slot
        tip = ", ".join(
            f"{s.name} {plain(v)}{unit}" for s, v in zip(series, bar.values, strict=True)
        )
        parts.append(f"<g><title>{escape(bar.label)}: {escape(tip)}</title>")
        bottom = float(HEIGHT - BOTTOM)
        for s, value in zip(series, bar.values, strict=True):
            if peak == 0 or value <= 0:
                continue
            h = plot * float(value) / float(peak)
            bottom -= h
            parts.append(
                f'<rect x="{x + slot * 0.1:.1f}" y="{bottom:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{h:.1f}" fill="{s.color}"/>'
            )
        parts.append("</g>")
        if i % every == 0:
            # The end labels align with the chart's edges rather than centring, or are cut off.
            anchor, at = (
                ("start", x)
                if i == 0
                else ("end", x + slot)
                if i == len(bars) - 1
                else ("middle", x + slot / 2)
            )
            parts.append(
                f'<text x="{at:.1f}" y="{HEIGHT - 5}" class="axis" '
                f'text-anchor="{anchor}">{escape(bar.label.split(" ")[-1])}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        # A swatch drawn, not styled: the pages' Content-Security-Policy allows no inline style.
        f'<span class="key"><svg class="swatch" viewBox="0 0 1 1" aria-hidden="true">'
        f'<rect width="1" height="1" fill="{s.color}"/></svg>{escape(s.name)}</span>'
        for s in series
    )
    return Markup(
        f"<figure><figcaption>{escape(title)} {legend}</figcaption>{''.join(parts)}</figure>"
    )


def plain(value: Number) -> str:
    """A number as written by people: no exponent, no trailing zeros."""
    if isinstance(value, int):
        return f"{value:,}"
    text = format(value.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")
