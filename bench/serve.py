"""``python -m bench.serve gateway|kafka|worker ...``: Tidemark's own CLI (``tidemark.cli.main``),
the same code path as ``python -m tidemark ...``.

The benchmark starts its broker and gateways through this module so that their
command lines do not contain ``tidemark gateway`` / ``tidemark kafka``: a developer's
``pkill -f "tidemark gateway"`` elsewhere on the machine then leaves a running
benchmark alone.

With ``BENCH_GC_STATS=<file>`` it also times the process's garbage collections
(``gc.callbacks``) and rewrites ``<file>`` every second with counts and pauses per
generation: stop-the-world pauses of the event loop that show up as latency spikes.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tidemark.cli import main


class GcStats:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self.long: list[tuple[float, int, float, int]] = []  # (unix s, gen, seconds, objects)
        self._t0 = 0.0
        gc.callbacks.append(self._callback)
        threading.Thread(target=self._writer, name="bench-gc-stats", daemon=True).start()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        gen = info["generation"]
        self.count[gen] += 1
        self.total_s[gen] += took
        self.max_s[gen] = max(self.max_s[gen], took)
        if took >= 0.005 and len(self.long) < 2000:
            self.long.append((time.time(), gen, took, info.get("collected", 0)))

    def _writer(self) -> None:
        while True:
            time.sleep(1.0)
            data = {"collections": self.count, "total_s": self.total_s, "max_s": self.max_s,
                    "pauses_over_5ms": self.long, "unix": time.time()}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


if __name__ == "__main__":
    if os.environ.get("BENCH_GC_STATS"):
        GcStats(Path(os.environ["BENCH_GC_STATS"]))
    sys.exit(main(sys.argv[1:]))
