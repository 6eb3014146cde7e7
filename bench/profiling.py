"""Where the gateway's CPU goes: py-spy samples of a running gateway, summarised.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``,
each frame ``function (file:line)``). The summary gives self time (leaf frames) and
inclusive time (any frame of a stack) per function, and self time per package.
Samples of an idle thread are not recorded, so samples / (rate x seconds) is the
share of the time the gateway's thread was busy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: Samples per second (``BENCH_SPY_RATE``: 1000 gives a storm of a few seconds enough
#: samples to rank functions of under 1 %).
RATE = int(os.environ.get("BENCH_SPY_RATE", "100"))
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _package(path: str) -> str:
    short = _short(path)
    head = short.split("/", 1)[0]
    if head.endswith(".py"):
        head = head[:-3]
    return head or short


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text.strip())
    if m is None:
        return text.strip(), ""
    return m["func"], m["file"]


def summarize(raw: str, seconds: float, top: int = 15) -> dict[str, Any]:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        func, path = frames[-1]
        self_t[f"{func} ({_short(path)})"] += count
        packages[_package(path)] += count
        for name in {f"{fn} ({_short(fp)})" for fn, fp in frames}:
            incl[name] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0
    return {
        "samples": total,
        "busy_share_of_thread": round(total / (RATE * seconds), 3) if seconds else None,
        "self_top": [{"function": k, "pct": pct(v)} for k, v in self_t.most_common(top)],
        "inclusive_top": [{"function": k, "pct": pct(v)} for k, v in incl.most_common(top + 10)],
        "self_by_package": [{"package": k, "pct": pct(v)} for k, v in packages.most_common(12)],
    }


def record(spy: str, pid: int, out: Path, *, seconds: float) -> dict[str, Any]:
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
           str(RATE), "--nonblocking", "--format", "raw", "--output", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": "py-spy timed out"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed ({proc.returncode}): {proc.stderr[-500:]}"}
    summary = summarize(out.read_text(), seconds)
    summary["raw_file"] = str(out)
    return summary
