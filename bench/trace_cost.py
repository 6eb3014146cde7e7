"""What trace context costs per call, in one process (no Kafka, no network).

    .venv/bin/python -m bench.trace_cost [--number N]

Times, with ``timeit`` (best of 5 repeats of N calls), the calls tracing adds to the hot
paths, as a ratio to ``Event.headers()`` (the ``tm-type``/``tm-seq`` headers every event
record gets, measured in the same run):

- ``headers() off``: ``eventlog.tracing.headers()`` with no current span, what a create,
  an append and a publish call while tracing is off;
- ``transaction_spans() off``: what the worker's outbox adds per transaction with
  tracing off (per event it adds one ``is not None`` check);
- ``inject``: ``headers(span)`` for a recording span (once per stream per transaction,
  and once per create or append, with tracing on);
- ``extract``: ``kafka_context()`` of a record's headers (once per job start, once per
  stream per gateway for its delivery spans);
- ``span``: starting and ending one SDK span with no exporter (the cost of a transaction
  span, without the export).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider

from eventlog import tracing
from schemas.events import Event
from workers.tracing import transaction_spans


def best_ns(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    event = Event(stream="s3-0-0-0-x", seq=7, type="partial_result", ts=0, data={})
    tracer = TracerProvider().get_tracer("bench")
    span = tracer.start_span("bench")
    headers = tracing.headers(span)
    record = [*event.headers(), *headers]

    def one_span() -> None:
        tracer.start_span("tx").end()

    def transaction_off() -> None:
        with transaction_spans(()) as spans:
            assert spans is None

    rows = [("Event.headers() (reference)", event.headers),
            ("headers() off (no current span)", tracing.headers),
            ("transaction_spans() off (per transaction)", transaction_off),
            ("inject: headers(span)", lambda: tracing.headers(span)),
            ("extract: kafka_context(record headers)", lambda: tracing.kafka_context(record)),
            ("inject + extract", lambda: tracing.kafka_context(tracing.headers(span))),
            ("start + end one span (no exporter)", one_span)]
    reference = best_ns(rows[0][1], args.number)
    print(f"{'call':42} {'ns/call':>9} {'x reference':>12}")
    for name, fn in rows:
        ns = reference if fn is rows[0][1] else best_ns(fn, args.number)
        print(f"{name:42} {ns:9.0f} {ns / reference:12.2f}")
    span.end()


if __name__ == "__main__":
    main()
