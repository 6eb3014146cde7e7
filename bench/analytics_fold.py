"""CPU cost of analytics in one process, against references measured in the same run.

    .venv/bin/python -m bench.analytics_fold [--streams 20000]

Three figures, each as a ratio to a reference that the gateway already pays:

* **fold**: decoding and folding a stream's index records (queued, running, completed:
  what every gateway does for every stream of its namespace), against only decoding them
  (``StreamInfo.from_json``, what the stream index reader does for each record).
* **hook**: one ``Recorder.served`` call (the hot-path hook of an SSE response), against
  one ``prometheus_client`` ``Counter.inc()`` (the hot path's existing metric call).
* **document**: building one analytics document, against serializing it (orjson).

Single thread, no Kafka: CPU seconds from ``time.process_time``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from eventlog.index import StreamInfo
from gateway.analytics_fold import Fold
from gateway.analytics_recorder import Recorder, build_report


class _Session:
    def __init__(self) -> None:
        self.stream_id = "s3-0-0-0-abc"
        self.request: dict[str, Any] = {}


def _records(n: int, now: int) -> list[bytes]:
    out = []
    for i in range(n):
        base = {"stream_id": f"s{i}", "namespace": "ns", "topic": "t", "partition": i % 12,
                "first_offset": i, "generator": "demo", "created_at": now - 60_000 + i,
                "updated_at": now - 60_000 + i, "tenant": f"t{i % 10}",
                "owner": f"u{i % 100}",
                "experiments": {"coalesce": "fast" if i % 2 else "slow"}}
        for status in ("queued", "running", "completed"):
            out.append(orjson.dumps({**base, "status": status, "last_seq": 20}))
    return out


def _cpu(fn: Any, *args: Any) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


async def _hooks(n: int) -> tuple[float, float]:
    recorder = Recorder()
    session = _Session()
    counter = Counter("c", "c", registry=CollectorRegistry())
    loop = asyncio.get_running_loop()
    began = loop.time()
    t0 = time.process_time()
    for _ in range(n):
        counter.inc()
    ref = time.process_time() - t0
    t0 = time.process_time()
    for i in range(n):
        if i % 50_000 == 0:
            recorder.take()  # as every interval does
        recorder.served(session, resumed=False, source="memory", began=began)
    return time.process_time() - t0, ref


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.analytics_fold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=20_000)
    ap.add_argument("--hooks", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    now = int(time.time() * 1000)
    records = _records(args.streams, now)
    fold = Fold(default_tenant="default", recent=20, top_users=20)

    decode = _cpu(lambda: [StreamInfo.from_json(r) for r in records])
    folded = _cpu(lambda: [fold.apply_index(StreamInfo.from_json(r), now=now)
                           for r in records])
    observations = [("first_event", f"s{i}", f"t{i % 10}", 20.0 + i % 50)
                    for i in range(5000)]
    fold.apply_report(build_report(observations, process="p", ts=now, interval_ms=5000,
                                   connections=["t1"] * 100, resolve=fold.stream), now=now)
    hook, counter = asyncio.run(_hooks(args.hooks))

    def docs(selected: str, windows: list[str], n: int) -> tuple[float, float]:
        doc: dict[str, Any] = {}
        t0 = time.process_time()
        for _ in range(n):
            doc = fold.document(selected=selected, windows=windows, now=now)
        built = (time.process_time() - t0) / n
        t0 = time.process_time()
        for _ in range(n):
            orjson.dumps(doc)
        return built, (time.process_time() - t0) / n

    tenant_doc, tenant_json = docs("t1", ["5m", "1h"], 50)
    all_doc, all_json = docs("*", ["1m", "5m", "15m", "1h", "6h", "24h"], 10)
    print(orjson.dumps({
        "setup": {"streams": args.streams, "index_records": len(records), "tenants": 10,
                  "users": 100, "variants": 2, "hook_calls": args.hooks,
                  "process": "one Python 3.11 process, single thread, no Kafka"},
        "fold_us_per_stream": round(folded / args.streams * 1e6, 1),
        "decode_only_us_per_stream": round(decode / args.streams * 1e6, 1),
        "fold_vs_decode": round(folded / decode, 2),
        "hook_ns_per_call": round(hook / args.hooks * 1e9),
        "counter_inc_ns_per_call": round(counter / args.hooks * 1e9),
        "hook_vs_counter_inc": round(hook / counter, 2),
        "tenant_document_ms": round(tenant_doc * 1e3, 3),
        "tenant_document_vs_json": round(tenant_doc / tenant_json, 1),
        "all_tenants_all_windows_document_ms": round(all_doc * 1e3, 3),
        "all_document_vs_json": round(all_doc / all_json, 1),
        "cpu_seconds": round(time.process_time(), 2),
    }, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
