"""Per-subscriber delivery (gateway.delivery): the exact SSE bytes a batched or
metadata-free subscriber gets for given frames, the ids of coalesced events, and how
preferences are decided (query over stream context over defaults)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import MultiDict

from eventlog.index import StreamInfo
from eventlog.jobs import Job, parse_job_record
from eventlog.records import LogRecord
from gateway.delivery import MAX_CHUNKS, Delivery, Shaper
from gateway.hub import Frame, Row, frame_record
from gateway.streaming import Cursor, ShapedCursor
from schemas import events
from schemas.context import StreamContext, context_of_envelope
from schemas.eventid import encode_event_id, parse_event_id
from schemas.events import Event
from schemas.validation import InvalidInput, Validators
from workers.demo import DemoGenerator, demo_text

EPOCH = "5f3a9c21"
SID = "s1"


def frame(offset: int, seq: int, kind: str, data: dict[str, Any]) -> Frame:
    value = Event(stream=SID, seq=seq, type=kind, ts=1000 + seq, data=data).to_json()
    return frame_record(EPOCH, LogRecord(0, offset, SID.encode(), value, kind, seq, 0))


def chunk(offset: int, seq: int, index: int, text: str, **extra: Any) -> Frame:
    return frame(offset, seq, events.PARTIAL_RESULT, {"chunk": text, "chunkIndex": index,
                                                       **extra})


def eid(offset: int, seq: int | None = None) -> str:
    return encode_event_id(EPOCH, 0, offset, seq)


def rows(*frames: Frame) -> list[Row]:
    return [tuple(f) for f in frames]  # type: ignore[misc]


BATCHED = Delivery(batched=True, include_metadata=True, interval_s=0.25)
NO_META = Delivery(batched=False, include_metadata=False)


# --- exact bytes -------------------------------------------------------------------


def test_consecutive_chunks_become_one_event_with_the_last_chunks_id() -> None:
    shaper = Shaper(BATCHED)
    frames = [chunk(10, 3, 0, "the "), chunk(11, 4, 1, "stream "),
              chunk(12, 5, 2, "flows", isComplete=False)]
    assert shaper.shape(rows(*frames), now=0.0) == (b"", 0)
    assert shaper.held == 3 and shaper.deadline == 0.25
    assert shaper.shape([], now=0.2) == (b"", 0)
    data, count = shaper.shape([], now=0.25)
    assert count == 1
    assert data == (
        b"id: " + eid(12, 5).encode() + b"\nevent: partial_result\n"
        b'data: {"stream":"s1","seq":5,"type":"partial_result","ts":1005,"data":'
        b'{"chunk":"the stream flows","chunkIndex":0,"isComplete":false,"chunkCount":3,'
        b'"lastChunkIndex":2,"firstSeq":3}}\n\n')
    assert shaper.held == 0 and shaper.deadline is None


def test_a_coalesced_event_validates_against_the_schemas() -> None:
    shaper = Shaper(BATCHED)
    shaper.shape(rows(chunk(1, 1, 0, "a"), chunk(2, 2, 1, "b")), now=0.0)
    data, _ = shaper.flush()
    envelope = orjson.loads(data.split(b"\ndata: ", 1)[1].rstrip(b"\n"))
    validators = Validators()
    validators.check("envelope", envelope)
    validators.check("partial_result", envelope["data"])


def test_another_event_flushes_the_batch_first_then_goes_out_as_it_is() -> None:
    shaper = Shaper(BATCHED)
    a, b = chunk(1, 1, 0, "a "), chunk(2, 2, 1, "b")
    progress = frame(3, 3, events.PROGRESS, {"percentage": 50})
    c = chunk(4, 4, 2, " c")
    data, count = shaper.shape(rows(a, b, progress, c), now=0.0)
    assert count == 2
    merged, rest = data.split(b"\n\n", 1)
    assert merged.startswith(b"id: " + eid(2, 2).encode() + b"\n")
    assert b'"chunk":"a b","chunkIndex":0,"chunkCount":2,"lastChunkIndex":1' in merged
    assert rest == progress.data
    assert shaper.held == 1
    # The terminal event flushes what is held (one chunk: byte for byte) before itself.
    result = frame(5, 5, events.RESULT, {"text": "a b c"})
    assert shaper.shape(rows(result), now=0.01) == (c.data + result.data, 2)


def test_one_chunk_alone_goes_out_unchanged() -> None:
    shaper = Shaper(BATCHED)
    one = chunk(7, 2, 0, "solo")
    shaper.shape(rows(one), now=0.0)
    assert shaper.shape([], now=1.0) == (one.data, 1)


def test_is_complete_ends_the_batch_at_once() -> None:
    shaper = Shaper(BATCHED)
    data, count = shaper.shape(rows(chunk(1, 1, 0, "x"), chunk(2, 2, 1, "y", isComplete=True)),
                               now=0.0)
    assert count == 1 and b'"chunk":"xy"' in data and b'"isComplete":true' in data
    assert shaper.held == 0


def test_chunks_with_other_fields_or_a_gap_in_indexes_are_never_merged() -> None:
    shaper = Shaper(BATCHED)
    a = chunk(1, 1, 0, "a")
    cited = chunk(2, 2, 1, "b", citation="doc-7")
    c = chunk(3, 3, 5, "c")  # not chunkIndex 2
    d = chunk(4, 4, 6, "d")
    data, count = shaper.shape(rows(a, cited, c, d), now=0.0)
    assert (data, count) == (a.data + cited.data, 2)
    merged, _ = shaper.flush()
    assert b'"chunk":"cd","chunkIndex":5' in merged


def test_a_batch_is_bounded_in_chunks() -> None:
    shaper = Shaper(BATCHED)
    many = [chunk(i, i + 1, i, "w") for i in range(MAX_CHUNKS + 5)]
    data, count = shaper.shape(rows(*many), now=0.0)
    assert count == 1 and f'"chunkCount":{MAX_CHUNKS}'.encode() in data
    assert shaper.held == 5


def test_metadata_is_dropped_for_this_subscriber_only() -> None:
    meta = frame(2, 1, events.METADATA, {"model": "m"})
    a, b = chunk(3, 2, 0, "a"), chunk(4, 3, 1, "b")
    frames = rows(meta, a, b)
    assert Shaper(NO_META).shape(frames, now=0.0) == (a.data + b.data, 2)
    # The frames themselves are untouched: a plain cursor still writes all three.
    assert Cursor(-1).take(frames) == (meta.data + a.data + b.data, 3)


def test_batched_without_metadata() -> None:
    shaper = Shaper(Delivery(batched=True, include_metadata=False, interval_s=0.1))
    meta = frame(2, 1, events.METADATA, {"model": "m"})
    data, count = shaper.shape(rows(chunk(1, 0, 0, "a"), meta, chunk(3, 2, 1, "b")), now=0.0)
    # The dropped metadata event does not split the batch.
    assert (data, count) == (b"", 0)
    data, count = shaper.flush()
    assert count == 1 and b'"chunk":"ab"' in data and b"metadata" not in data


# --- the cursor: positions, ids, and the resume rule -----------------------------------


async def test_shaped_cursor_moves_over_held_and_dropped_frames_and_wakes_at_the_deadline(
        ) -> None:
    woke = asyncio.Event()
    cursor = ShapedCursor(-1, shaper=Shaper(Delivery(True, False, 0.02)), wake=woke.set)
    meta = frame(0, 0, events.METADATA, {})
    frames = rows(meta, chunk(1, 1, 0, "a"), chunk(2, 2, 1, "b"))
    assert cursor.take(frames) == (b"", 0)
    assert (cursor.offset, cursor.seq, cursor.written) == (2, 2, 0)
    assert cursor.take(frames) == (b"", 0)  # already taken: nothing twice
    await asyncio.wait_for(woke.wait(), 1.0)
    data, count = cursor.take([])
    assert count == 1 and data.startswith(b"id: " + eid(2, 2).encode() + b"\n")
    assert cursor.written == 1
    cursor.close()


def test_a_shaped_cursor_rearms_a_wake_up_that_uvloop_made_a_plain_handle() -> None:
    """uvloop's ``call_at`` for a deadline due now returns a ``Handle`` (no ``when()``):
    a held chunk, then one that does not continue it, must not fail the response (the
    gateway runs on uvloop; this raised AttributeError under load)."""
    import uvloop

    async def main() -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        cursor = ShapedCursor(-1, shaper=Shaper(Delivery(True, None, 1e-9)), wake=woke.set)
        assert cursor.take(rows(chunk(1, 1, 0, "a"))) == (b"", 0)
        assert not isinstance(cursor._timer, asyncio.TimerHandle), "uvloop changed"
        assert cursor.take(rows(chunk(2, 2, 5, "b"))) == (chunk(1, 1, 0, "a").data, 1)
        # Woken (perhaps within the same clock reading): taken again until it comes.
        for _ in range(100):
            await asyncio.wait_for(woke.wait(), 1.0)
            woke.clear()
            data, count = cursor.take([])
            if count:
                cursor.close()
                return data, count
        raise AssertionError(f"the held chunk never came (loop time {loop.time()})")

    data, count = uvloop.run(main())
    assert count == 1 and data == chunk(2, 2, 5, "b").data


async def test_a_cursor_that_falls_behind_goes_on_batched_from_its_position() -> None:
    """The lagging switch (gateway.streaming._coalesce_from_now): what a realtime cursor
    wrote stays written once, the overlap a catch-up serves again is skipped, and what
    follows is coalesced with the last chunk's id; a metadata filter stays."""
    frames = [chunk(1 + i, 1 + i, i, f"t{i} ") for i in range(6)]
    realtime = Cursor(-1)
    assert realtime.take(rows(*frames[:2])) == (frames[0].data + frames[1].data, 2)
    lagging = ShapedCursor.continuing(realtime, Shaper(BATCHED), wake=lambda: None)
    assert (lagging.offset, lagging.seq, lagging.written) == (2, 2, 2)
    # The catch-up serves from before the cursor's position: the overlap is not written.
    assert lagging.take(rows(*frames)) == (b"", 0)
    data, count = lagging.flush()
    assert count == 1 and lagging.written == 3
    assert data.startswith(b"id: " + eid(6, 6).encode() + b"\n")
    assert b'"chunk":"t2 t3 t4 t5 ","chunkIndex":2,"chunkCount":4' in data
    lagging.close()

    no_meta = ShapedCursor(-1, shaper=Shaper(NO_META), wake=lambda: None)
    meta = frame(1, 1, events.METADATA, {"model": "m"})
    a, b, c = chunk(2, 2, 0, "a"), chunk(4, 4, 1, "b"), chunk(5, 5, 2, "c")
    assert no_meta.take(rows(meta, a)) == (a.data, 1)
    both = ShapedCursor.continuing(
        no_meta, Shaper(Delivery(batched=True, include_metadata=False, interval_s=0.25)),
        wake=lambda: None)
    assert both.take(rows(meta, a, frame(3, 3, events.METADATA, {}), b, c)) == (b"", 0)
    data, count = both.flush()
    assert count == 1 and b'"chunk":"bc"' in data and b"metadata" not in data
    both.close()


def test_a_cursor_resumed_by_seq_skips_what_the_client_has_and_duplicates() -> None:
    """A resume on another cluster's copy (offsets differ, seq is the stream's): from the
    stream's start, only events above the client's seq, each once (a copy MirrorMaker
    wrote twice is skipped); if the client has the terminal event, the response ends."""
    frames = [chunk(40 + i, 1 + i, i, f"t{i} ") for i in range(4)]
    dup = chunk(44, 3, 2, "t2 ")  # seq 3 again, at a later offset
    cursor = Cursor(-1, seq=2)
    data, count = cursor.take(rows(*frames, dup))
    assert count == 2 and data == frames[2].data + frames[3].data
    assert not cursor.ended
    done = frame(45, 5, events.RESULT, {"text": "t0 t1 t2 t3"})
    has_all = Cursor(-1, seq=5)
    assert has_all.take(rows(*frames, done)) == (b"", 0)
    assert has_all.ended


def test_resuming_from_each_coalesced_id_gives_exactly_the_rest() -> None:
    """The batched events' ids are positions: resuming from one continues right after
    the last chunk it carried, and the chunks joined equal the realtime text."""
    frames = [frame(0, 0, events.STATUS, {"state": "queued"})]
    frames += [chunk(1 + i, 1 + i, i, f"w{i} ") for i in range(9)]
    frames.append(frame(10, 10, events.RESULT, {"text": "..."}))
    text = "".join(f"w{i} " for i in range(9))

    def follow(after: int) -> list[dict[str, Any]]:
        shaper = Shaper(BATCHED)
        cursor = Cursor(after)
        out: list[bytes] = []
        for f in rows(*frames):  # one frame per take: some batching, at each 3rd frame
            accepted, _ = cursor.take([f])
            if accepted:
                data, _ = shaper.shape([f], now=f[0] / 3)
                out.append(data)
        data, _ = shaper.flush()
        out.append(data)
        got = []
        for block in b"".join(out).split(b"\n\n")[:-1]:
            lines = dict(line.split(b": ", 1) for line in block.split(b"\n"))
            got.append({"id": lines[b"id"].decode(), **orjson.loads(lines[b"data"])})
        return got

    whole = follow(-1)
    partial = [e for e in whole if e["type"] == events.PARTIAL_RESULT]
    assert len(partial) < 9
    assert "".join(e["data"]["chunk"] for e in partial) == text
    for i, event in enumerate(whole[:-1]):
        offset = parse_event_id(event["id"]).offset
        rest = follow(offset)
        chunks = "".join(e["data"]["chunk"] for e in whole[: i + 1]
                         if e["type"] == events.PARTIAL_RESULT)
        chunks += "".join(e["data"]["chunk"] for e in rest if e["type"] == events.PARTIAL_RESULT)
        assert chunks == text
        assert rest[-1]["type"] == events.RESULT


# --- preferences -------------------------------------------------------------------


def test_query_parameters() -> None:
    d = Delivery.requested(MultiDict(), interval_s=0.5)
    assert d == Delivery(None, None, 0.5) and d.needs_context
    d = Delivery.requested(MultiDict(update_frequency="batched", include_metadata="false"),
                           interval_s=0.5)
    assert d == Delivery(True, False, 0.5) and not d.needs_context
    assert Delivery.requested(MultiDict(update_frequency="realtime", include_metadata="true"),
                              interval_s=0.5).plain


# gateway.problems builds its responses with aiohttp's deprecated ``body=`` argument.
@pytest.mark.filterwarnings("ignore:body argument is deprecated:DeprecationWarning")
@pytest.mark.parametrize("query", [{"update_frequency": "sometimes"},
                                   {"update_frequency": ""},
                                   {"include_metadata": "yes"},
                                   {"include_metadata": "False"}])
def test_a_bad_query_value_is_a_400_problem(query: dict[str, str]) -> None:
    with pytest.raises(web.HTTPException) as info:
        Delivery.requested(MultiDict(query), interval_s=0.5)
    assert info.value.status == 400
    assert info.value.content_type == "application/problem+json"
    body = orjson.loads(info.value.body)  # type: ignore[arg-type]
    assert body["parameter"] in query and body["detail"]


def test_the_request_overrides_the_stream_which_overrides_the_defaults() -> None:
    ctx = StreamContext(update_frequency="batched", include_metadata=False)
    assert Delivery().resolve(None).plain
    assert Delivery().resolve(StreamContext(session_id="x")).plain
    assert Delivery().resolve(ctx) == Delivery(True, False)
    assert Delivery(batched=False).resolve(ctx) == Delivery(False, False)
    assert Delivery(include_metadata=True).resolve(ctx) == Delivery(True, True)
    assert Delivery(False, True).resolve(ctx).plain


# --- the context in the create body, the first event and the job ----------------------


def test_the_create_body_accepts_a_context_and_rejects_bad_ones() -> None:
    v = Validators()
    body = {"query": "q", "context": {"sessionId": "sess-1", "preferences": {
        "updateFrequency": "batched", "responseFormat": "concise", "includeMetadata": False}}}
    create = v.create_request(body)
    assert create.context == StreamContext(session_id="sess-1", update_frequency="batched",
                                           response_format="concise", include_metadata=False)
    assert create.context.to_json() == body["context"]
    assert v.create_request({"query": "q"}).context is None
    assert v.create_request({"query": "q", "context": {}}).context == StreamContext()
    for bad, pointer in [({"preferences": {"updateFrequency": "weekly"}},
                          "/context/preferences/updateFrequency"),
                         ({"preferences": {"includeMetadata": "no"}},
                          "/context/preferences/includeMetadata"),
                         ({"sessionId": ""}, "/context/sessionId"),
                         ({"user": "me"}, "/context"),
                         ("batched", "/context")]:
        with pytest.raises(InvalidInput) as info:
            v.create_request({"query": "q", "context": bad})
        assert info.value.pointer == pointer


def test_context_of_a_first_event() -> None:
    ctx = StreamContext(session_id="s", response_format="concise")
    first = Event(stream=SID, seq=0, type=events.STATUS, ts=1,
                  data={"state": "queued", "context": ctx.to_json()}).to_json()
    assert context_of_envelope(first) == ctx
    plain = Event(stream=SID, seq=0, type=events.STATUS, ts=1, data={"state": "queued"})
    assert context_of_envelope(plain.to_json()) is None


def _job(context: StreamContext | None, tokens: int = 40) -> Job:
    info = StreamInfo(stream_id=SID, namespace="default", topic="t", partition=0,
                      first_offset=0, generator="demo", status="queued", created_at=0,
                      updated_at=0)
    return Job(stream=info, query="what is a tidemark?", context=context,
               options={"tokens": tokens, "tokens_per_second": 100_000})


def test_the_job_carries_the_context() -> None:
    ctx = StreamContext(response_format="concise")
    job = parse_job_record(_job(ctx).to_json())
    assert isinstance(job, Job) and job.context == ctx
    plain = parse_job_record(_job(None).to_json())
    assert isinstance(plain, Job) and plain.context is None
    assert b"context" not in _job(None).to_json()


async def test_a_concise_answer_is_shorter() -> None:
    async def run(ctx: StreamContext | None) -> list[Any]:
        return [d async for d in DemoGenerator().events(_job(ctx), 1)]
    detailed = await run(StreamContext(response_format="detailed"))
    concise = await run(StreamContext(response_format="concise"))
    assert detailed == await run(None)
    kinds = [d.type for d in concise]
    assert kinds.count(events.PARTIAL_RESULT) == 10
    assert kinds.count(events.PROGRESS) == 2  # 0 % and 100 % only
    assert len(concise) < len(detailed) // 3
    assert concise[-1].data["text"] == demo_text("what is a tidemark?", 10)
    assert concise[-1].data["responseFormat"] == "concise"
    assert detailed[-1].data["text"].startswith(concise[-1].data["text"].rstrip())
