"""Markdown tables: the one formatter of every table rnnlab writes (sweep reports, reruns, results)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any, digits: int = 4, width: int | None = 120) -> str:
    """A value as a table cell: floats rounded, nothing for a missing one, pipes escaped, text cut at
    ``width`` characters (``None``: whole, where the text is a command to copy)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:width]


def markdown_table(
    header: Sequence[Any], rows: Iterable[Sequence[Any]], digits: int = 4, width: int | None = 120
) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v, digits, width) for v in row) + " |" for row in rows]
    return "\n".join(lines)
