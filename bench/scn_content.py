"""Scenario ``content``: the content filters' accuracy on the labelled set the repository
ships (tests/data/content/labelled.jsonl, made by its make_labelled.py), and the
per-token latency the processors add in the worker.

In-process, no Kafka: the filters run where the worker runs them, in
``workers.processors.Pipeline.feed`` between the generator and the outbox, and this
measures exactly that call (what Kafka and the gateway add is the ``worker_path``
scenario's, unchanged by processors).

- **Accuracy.** Each text is cut into chunks at ``splits`` sets of random positions
  (plus the text whole) and streamed through ``pii`` then ``profanity`` (``redact``); a
  streaming is right when the text written equals the labelled redaction exactly (every
  term caught, nothing else touched, wherever the chunks were cut). Figures: the share of
  right streamings, and per kind the recall and precision of the terms (by the labels'
  spans, on the whole texts).
- **Latency.** Demo-like tokens (``workers.demo``'s words, with a card number and an email
  put in) streamed through no processor, the filters, and all four processors: the time
  of one ``feed`` per ``partial_result``, p50/p99, and the added time per token against
  no processor. One process, one core, nothing else running in it.

``python -m bench.scn_content`` prints the figures as JSON.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.markdown import fmt as _f
from bench.markdown import table as _table
from eventlog.contentpolicy import Spec
from eventlog.index import RUNNING, StreamInfo
from eventlog.jobs import Job
from schemas import events
from workers.demo import demo_tokens
from workers.filters import PiiProcessor, ProfanityProcessor, pii_scanner, profanity_scanner
from workers.insights import LanguageProcessor, RelevanceProcessor, SentimentProcessor
from workers.processors import Output, Pipeline, Processor

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "data" / "content" / "labelled.jsonl"
FILTERS = (Spec(processor="pii"), Spec(processor="profanity"))
ALL = (*FILTERS, Spec(processor="sentiment"), Spec(processor="language"))


def job(query: str = "how do streams resume") -> Job:
    """A job as the worker gets it (no Kafka needed to build one)."""
    info = StreamInfo(stream_id="content-bench", namespace="default", topic="t", partition=0,
                      first_offset=0, generator="demo", status=RUNNING, created_at=0,
                      updated_at=0)
    return Job(stream=info, query=query)


def builtin_processors() -> dict[str, Processor]:
    return {p.name: p for p in (PiiProcessor(), ProfanityProcessor(), SentimentProcessor(),
                                RelevanceProcessor(), LanguageProcessor())}


def labelled() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text("utf-8").splitlines() if line]


def chunked(text: str, cuts: Iterable[int]) -> list[str]:
    at = sorted({c for c in cuts if 0 < c < len(text)})
    return [text[a:b] for a, b in zip([0, *at], [*at, len(text)], strict=True)]


def stream(chunks: Sequence[str], specs: Sequence[Spec],
           processors: Mapping[str, Processor], *, for_job: Job | None = None,
           ) -> list[Output]:
    """``chunks`` as a generator's ``partial_result`` events then a ``result`` with their
    text, through a pipeline of ``specs``: the events written."""
    pipeline = Pipeline(for_job or job(), processors, specs)
    out: list[Output] = []
    drafts = [Output(events.PARTIAL_RESULT, {"chunk": c, "chunkIndex": i,
                                             "isComplete": i == len(chunks) - 1})
              for i, c in enumerate(chunks)]
    drafts.append(Output(events.RESULT, {"text": "".join(chunks)}))
    for src, draft in enumerate(drafts, start=1):
        out += [ev for ev, _ in pipeline.feed(src, draft)]
    return out


def written_text(out: Sequence[Output]) -> str:
    return "".join(ev.data["chunk"] for ev in out if ev.type == events.PARTIAL_RESULT)


def accuracy(rows: Sequence[dict[str, Any]], *, splits: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    processors = builtin_processors()
    right = total = 0
    wrong: list[dict[str, Any]] = []
    for row in rows:
        text = row["text"]
        cutsets: list[list[int]] = [[]]
        for _ in range(splits):
            k = rng.randint(1, min(12, max(1, len(text) - 1)))
            cutsets.append(rng.sample(range(1, len(text)), min(k, len(text) - 1)))
        for cuts in cutsets:
            chunks = chunked(text, cuts)
            total += 1
            got = written_text(stream(chunks, FILTERS, processors))
            if got == row["expected"]:
                right += 1
            elif len(wrong) < 5:
                wrong.append({"id": row["id"], "chunks": chunks, "got": got,
                              "expected": row["expected"]})
    return {"streamings": total, "right": right, "accuracy_pct": 100.0 * right / total,
            "texts": len(rows), "splits_per_text": splits + 1, "examples_wrong": wrong,
            "by_kind": by_kind(rows)}


def by_kind(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Recall and precision per kind, matching found spans to labelled ones exactly."""
    scanners = {"pii": pii_scanner(), "profanity": profanity_scanner()}
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        labels = {(x["start"], x["end"], x["kind"]) for x in row["labels"]}
        found = {(f.start, f.end, f.kind) for s in scanners.values()
                 for f in s.scan(row["text"], final=True).findings}
        for kind in {k for *_, k in labels | found}:
            c = counts.setdefault(kind, {"labelled": 0, "found": 0, "right": 0})
            c["labelled"] += sum(1 for x in labels if x[2] == kind)
            c["found"] += sum(1 for x in found if x[2] == kind)
            c["right"] += sum(1 for x in labels & found if x[2] == kind)
    return {k: {**c, "recall_pct": 100.0 * c["right"] / max(1, c["labelled"]),
                "precision_pct": 100.0 * c["right"] / max(1, c["found"])}
            for k, c in sorted(counts.items())}


def latency(tokens: int, repeats: int) -> dict[str, Any]:
    processors = builtin_processors()
    words = demo_tokens("content bench", tokens)
    words[tokens // 3] = "card 4111 1111 "
    words[tokens // 3 + 1] = "1111 1111 and "
    words[2 * tokens // 3] = "mail jo.doe@exa"
    words[2 * tokens // 3 + 1] = "mple.com now "
    the_job = job()
    out: dict[str, Any] = {"tokens": tokens, "repeats": repeats}
    base_p50 = 0.0
    for name, specs in (("none", ()), ("filters", FILTERS), ("all", ALL)):
        times: list[float] = []
        for _ in range(repeats):
            pipeline = Pipeline(the_job, processors, specs)
            for i, w in enumerate(words):
                ev = Output(events.PARTIAL_RESULT, {"chunk": w, "chunkIndex": i,
                                                    "isComplete": i == tokens - 1})
                t0 = time.perf_counter()
                pipeline.feed(i + 1, ev)
                times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        p50 = statistics.median(times)
        if name == "none":
            base_p50 = p50
        out[name] = {"p50_us": p50, "p99_us": times[int(0.99 * (len(times) - 1))],
                     "mean_us": statistics.fmean(times), "added_p50_us": p50 - base_p50}
    return out


def content(profile: str = "short") -> dict[str, Any]:
    rows = labelled()
    splits = 20 if profile == "short" else 100
    return {"setup": {"labelled": str(LABELLED.relative_to(LABELLED.parents[3])),
                      "policy": [s.to_json() for s in FILTERS]},
            "accuracy": accuracy(rows, splits=splits),
            "latency": latency(200, 5 if profile == "short" else 20)}


def render(sc: dict[str, Any]) -> list[str]:
    c = sc.get("content")
    if not c:
        return []
    if c.get("error"):
        return ["### Content processors", "", f"**error:** `{c['error'][-300:]}`", ""]
    a, lat = c["accuracy"], c["latency"]
    lines = ["### Content processors (in the worker, in-process; labelled set "
             f"`{c['setup']['labelled']}`)", "",
             f"Accuracy: **{_f(a['accuracy_pct'], 2)} %** of {_f(a['streamings'])} streamings "
             f"({_f(a['texts'])} texts x {a['splits_per_text']} chunkings) wrote exactly the "
             "labelled redaction (pii + profanity, redact).", ""]
    lines += _table(["kind", "labelled", "found", "right", "recall", "precision"], [
        [k, _f(v["labelled"]), _f(v["found"]), _f(v["right"]), f"{_f(v['recall_pct'], 1)} %",
         f"{_f(v['precision_pct'], 1)} %"] for k, v in a["by_kind"].items()])
    lines += ["", f"Per-token time of `Pipeline.feed` ({_f(lat['tokens'])} demo tokens x "
              f"{lat['repeats']}, one core):", ""]
    lines += _table(["processors", "p50 µs", "p99 µs", "added p50 µs"], [
        [name, _f(lat[name]["p50_us"]), _f(lat[name]["p99_us"]), _f(lat[name]["added_p50_us"])]
        for name in ("none", "filters", "all")])
    lines.append("")
    return lines


if __name__ == "__main__":
    json.dump(content(sys.argv[1] if len(sys.argv) > 1 else "short"), sys.stdout, indent=2)
    sys.stdout.write("\n")
