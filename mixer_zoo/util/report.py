"""Plain-text tables and CSV/JSON files for results (no third-party table library needed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Union

from .files import atomic_write, atomic_write_text, umask_mode  # noqa: F401  (the one atomic writer, re-exported)


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none): errors stay one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def error_summary(error: BaseException) -> str:
    """``Type: first line`` of an exception, for messages that wrap another library's error."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def format_table(rows: Sequence[Dict[str, object]], columns: Sequence[str] = ()) -> str:
    """Rows of dicts -> aligned text table (numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    columns = list(columns) or list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line("-" * w for w in widths), *(line(row) for row in cells)])


def write_json(path: Union[str, Path], rows: List[Dict[str, object]]) -> None:
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")


def write_csv(path: Union[str, Path], rows: List[Dict[str, object]]) -> None:
    import io

    columns: List[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
