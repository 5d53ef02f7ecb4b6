"""Plain-text and markdown tables for the reports (profile, bench, port): one small formatter.

Cells are formatted by the caller (numbers as strings); columns whose ``align`` is ``r`` are right
aligned. ``style='text'`` gives a fixed-width table with a rule under the header, ``'markdown'`` a
GitHub pipe table.
"""
from __future__ import annotations

from typing import Sequence

STYLES = ("text", "markdown")


def format_table(headers: Sequence[str], rows: Sequence[Sequence], align: str | None = None, style: str = "text",
                 footer: Sequence[Sequence] = ()) -> str:
    """``headers`` and ``rows`` (lists of cells, ``str()``-ed) -> one table string.

    ``align``: one character per column, ``l`` or ``r`` (default: first column left, others right).
    ``footer``: rows printed after a second rule (totals), same columns.
    """
    if style not in STYLES:
        raise ValueError(f"unknown table style {style!r}; choose from {', '.join(STYLES)}")
    n = len(headers)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n:
        raise ValueError(f"align {align!r} does not match {n} columns")
    body = [[str(c) for c in r] for r in rows]
    foot = [[str(c) for c in r] for r in footer]
    for r in body + foot:
        if len(r) != n:
            raise ValueError(f"row {r} has {len(r)} cells, the table {n} columns")
    widths = [max(len(str(h)), *(len(r[i]) for r in body + foot)) if body or foot else len(str(h)) for i, h in enumerate(headers)]

    def line(cells):
        return " | ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    if style == "markdown":
        rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1)) for w, a in zip(widths, align)) + "|"
        lines = [_md(headers, widths, align), rule]
        lines += [_md(r, widths, align) for r in body + foot]
        return "\n".join(lines)
    rule = "-+-".join("-" * w for w in widths)
    lines = [line(list(map(str, headers))), rule] + [line(r) for r in body]
    if foot:
        lines += [rule] + [line(r) for r in foot]
    return "\n".join(lines)


def _md(cells, widths, align) -> str:
    out = [str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(cells, widths, align)]
    return "| " + " | ".join(out) + " |"


def fmt_float(x, digits: int = 1) -> str:
    """A number with ``digits`` decimals; ``-`` for None or NaN."""
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}"


def fmt_pct(x, digits: int = 1) -> str:
    """A fraction as a percentage (``0.253 -> '25.3%'``); ``-`` for None."""
    return "-" if x is None or x != x else f"{100.0 * x:.{digits}f}%"
