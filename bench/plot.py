"""Small dependency-free SVG charts for benchmark output (bars and histograms)."""

from __future__ import annotations

from html import escape


def bar_chart_svg(title: str, rows: list[tuple[str, float, float]], labels: tuple[str, str] = ("gateway", "ceiling"),
                  width: int = 640) -> str:
    """Paired horizontal bars: (name, ours, ceiling) per row."""
    top = max([max(a, b) for _, a, b in rows] + [1.0])
    row_h, left = 56, 170
    height = 60 + row_h * len(rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    scale = (width - left - 80) / top
    for i, (name, ours, ceiling) in enumerate(rows):
        y = 40 + i * row_h
        out.append(f'<text x="10" y="{y + 20}">{escape(name)}</text>')
        for j, (value, color) in enumerate(((ours, "#2b7bb9"), (ceiling, "#bbbbbb"))):
            w = max(1.0, value * scale)
            out.append(f'<rect x="{left}" y="{y + j * 22}" width="{w:.1f}" height="18" fill="{color}"/>')
            out.append(f'<text x="{left + w + 6:.1f}" y="{y + j * 22 + 14}">{value:,.0f} {labels[j]}</text>')
    out.append("</svg>")
    return "\n".join(out)


def histogram_svg(title: str, values: list[float], unit: str = "ms", bins: int = 30, width: int = 640) -> str:
    if not values:
        values = [0.0]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / span * bins))] += 1
    peak = max(counts) or 1
    height, base = 260, 220
    bar_w = (width - 60) / bins
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, c in enumerate(counts):
        h = c / peak * (base - 40)
        out.append(f'<rect x="{40 + i * bar_w:.1f}" y="{base - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                   f'fill="#2b7bb9"/>')
    out.append(f'<text x="40" y="{base + 16}">{low:.2f} {unit}</text>')
    out.append(f'<text x="{width - 120}" y="{base + 16}">{high:.2f} {unit}</text>')
    out.append("</svg>")
    return "\n".join(out)
