"""Terminal charts of a metric series: a one-line sparkline and a block chart of a few rows.

Pure functions (strings in, strings out) so `kubetune metrics` stays thin and the drawing is
unit-tested. Long series are fitted to the width by averaging neighbours per column.
"""

from __future__ import annotations

from collections.abc import Sequence

BLOCKS = " ▁▂▃▄▅▆▇█"
"""Nine heights: empty, then one to eight eighths of a cell."""


def fit(values: Sequence[float], width: int) -> list[float]:
    """`values` in at most `width` columns, each the mean of the values it covers."""
    n = len(values)
    if n <= width or width <= 0:
        return list(values) if width > 0 else []
    out = []
    for col in range(width):
        start, end = col * n // width, (col + 1) * n // width
        part = values[start : max(end, start + 1)]
        out.append(sum(part) / len(part))
    return out


def _levels(values: Sequence[float], steps: int) -> list[int]:
    """Each value as a height 1..steps between the series' min and max (flat: the middle)."""
    low, high = min(values), max(values)
    if high == low:
        return [max(steps // 2, 1)] * len(values)
    return [1 + round((v - low) / (high - low) * (steps - 1)) for v in values]


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """One line of blocks, lowest value ▁, highest █."""
    columns = fit(values, width)
    if not columns:
        return ""
    return "".join(BLOCKS[level] for level in _levels(columns, 8))


def block_chart(values: Sequence[float], width: int = 60, height: int = 8) -> list[str]:
    """`height` lines of blocks (top line first): each column a bar of eighths of a row."""
    columns = fit(values, width)
    if not columns or height <= 0:
        return []
    levels = _levels(columns, 8 * height)
    lines = []
    for row in range(height - 1, -1, -1):
        base = row * 8
        lines.append("".join(BLOCKS[min(max(level - base, 0), 8)] for level in levels).rstrip())
    return lines
