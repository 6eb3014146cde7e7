"""Markdown helpers shared by the benchmark's reports: a number as the tables show it,
a process's CPU, and a table."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 1) -> str:
    """A figure as the tables show it: thousands separated, ``-`` for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def cpu_cell(win: dict[str, Any], name: str) -> str:
    """A process's CPU over a measured window (``bench.procs.window``): seconds and share
    of one core."""
    p = win.get("processes", {}).get(name)
    return "-" if p is None else f"{p['cpu_s']:.1f} s ({p['cpu_pct_of_core']:.0f}%)"
