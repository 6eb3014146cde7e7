"""Content processors without Kafka: the holdback matcher on every split position of
every labelled text, the Luhn check, tenant policies, the actions, the pipeline's
position (a takeover at any event writes the same events) and the entry-point loader."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest

from bench.scn_content import (
    ALL,
    FILTERS,
    builtin_processors,
    chunked,
    job,
    labelled,
    stream,
    written_text,
)
from eventlog.contentpolicy import Spec, parse_policy
from eventlog.errors import ConfigError
from schemas import events
from workers.filters import pii_scanner, profanity_words
from workers.holdback import graphemes, luhn_valid
from workers.plugins import BROKEN, LOADED, load_processors
from workers.processors import Output, Pipeline, Position, ProcessorUnavailable

ROWS = labelled()
PROCESSORS = builtin_processors()


def test_the_labelled_set_has_every_kind_and_near_misses() -> None:
    kinds = {x["kind"] for row in ROWS for x in row["labels"]}
    assert kinds == {"email", "phone", "card", "profanity"}
    assert sum(1 for row in ROWS if not row["labels"]) >= 20
    for row in ROWS:
        for x in row["labels"]:
            if x["kind"] == "profanity":
                assert row["text"][x["start"]:x["end"]].lower() in profanity_words()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: str(r["id"]))
def test_every_split_position_writes_the_labelled_redaction(row: dict[str, Any]) -> None:
    text = row["text"]
    for cut in range(len(text) + 1):
        chunks = chunked(text, [cut])
        assert written_text(stream(chunks, FILTERS, PROCESSORS)) == row["expected"], chunks


def test_one_character_chunks_hold_back_only_a_possible_term() -> None:
    text = "the answer is 4111 1111 1111 1111 and that is all"
    out = stream(list(text), FILTERS, PROCESSORS)
    chunks = [ev.data["chunk"] for ev in out if ev.type == events.PARTIAL_RESULT]
    assert "".join(chunks) == "the answer is [card] and that is all"
    # Plain words go out as they come (never the whole answer held): "the" is a prefix of
    # nothing to hold once the space follows it.
    assert chunks[0] in {"t", "th", "the", "the "}
    assert max(len(c) for c in chunks) <= len("[card] ")


def test_luhn() -> None:
    assert luhn_valid("4111 1111 1111 1111")
    assert luhn_valid("3782-822463-10005")
    assert luhn_valid("6011000990139424")
    assert not luhn_valid("4111 1111 1111 1112")
    assert not luhn_valid("1234")
    assert not luhn_valid("4111 1111 1111 1111 1111")  # 20 digits
    assert not luhn_valid("4111x1111 1111 1111")


def test_a_card_failing_luhn_is_left_alone() -> None:
    found = pii_scanner().scan("pay 4111 1111 1111 1112 now", final=True).findings
    assert found == []


def test_graphemes_are_never_split() -> None:
    family = "\U0001F468\u200D\U0001F469\u200D\U0001F467"  # one cluster, five code points
    text = f"שלום {family} 你好 e\u0301"
    assert graphemes(text)[5] == family
    # A cut that would fall inside the ZWJ sequence moves to its start.
    scan = pii_scanner().scan(text + " bob@exa", final=False)
    assert scan.cut == len(text) + 1
    for cut in range(len(text) + 1):
        got = written_text(stream(chunked(text, [cut]), FILTERS, PROCESSORS))
        assert got == text


def test_policies_parse_and_are_validated() -> None:
    policy = parse_policy('{"default": [{"processor": "pii"}], "tenants": {"acme": '
                          '[{"processor": "profanity", "action": "block", "threshold": 2}]}}')
    assert policy.for_tenant("other") == (Spec(processor="pii"),)
    assert policy.for_tenant("acme") == (Spec(processor="profanity", action="block",
                                              threshold=2),)
    assert policy.processors == {"pii", "profanity"}
    assert parse_policy("").for_tenant("acme") == ()
    for bad in ('{"tenants": {"acme": [{"processor": "pii", "action": "zap"}]}}',
                '{"tenants": {"acme": [{"action": "flag"}]}}', '{"tenant": {}}', "[",
                '{"default": [{"processor": "Bad Name"}]}'):
        with pytest.raises(ConfigError, match="TIDEMARK_CONTENT_POLICY"):
            parse_policy(bad)


def test_flag_passes_the_text_and_says_where_each_term_is() -> None:
    text = "mail jo.doe@example.com or 4111 1111 1111 1111 now"
    out = stream(chunked(text, [10, 30]), [Spec(processor="pii", action="flag")], PROCESSORS)
    assert written_text(out) == text
    flags = [ev.data["contentFlag"] for ev in out if ev.type == events.METADATA]
    assert [(f["kind"], text[f["start"]:f["start"] + f["length"]]) for f in flags] == [
        ("email", "jo.doe@example.com"), ("card", "4111 1111 1111 1111")]
    assert out[-1].type == events.RESULT
    assert out[-1].data["content"]["pii"] == {"action": "flag", "found": {"email": 1,
                                                                          "card": 1}}


def test_block_ends_the_stream_before_the_term_is_written() -> None:
    text = "the number is 4111 1111 1111 1111 and more text"
    out = stream(chunked(text, [16, 20]), [Spec(processor="pii", action="block")], PROCESSORS)
    assert out[-1] == Output(events.ERROR, {
        "code": "content_blocked", "retryable": False,
        "message": "the answer was stopped by the pii filter (card)"})
    assert "4111" not in written_text(out)
    assert written_text(out) == "the number is "


def test_block_threshold_counts_terms() -> None:
    spec = Spec(processor="profanity", action="block", threshold=2)
    one = stream(["oh shit, that is it"], [spec], PROCESSORS)
    assert one[-1].type == events.RESULT
    two = stream(["oh shit, ", "damn it"], [spec], PROCESSORS)
    assert two[-1].data["code"] == "content_blocked"


def test_sentiment_and_language_in_metadata_and_result() -> None:
    chunks = ["I love ", "this, ", "it is ", "wonderful ", "and great."]
    specs = [Spec(processor="sentiment", options={"every": 2}), Spec(processor="language")]
    out = stream(chunks, specs, PROCESSORS, for_job=job("Wie spät ist es in Berlin heute?"))
    meta = [ev.data["analysis"] for ev in out if ev.type == events.METADATA]
    assert [m["chunks"] for m in meta if "sentiment" in m] == [2, 4]
    assert {"language": {"query": "de"}} in meta
    result = out[-1].data["analysis"]
    assert result["sentiment"]["label"] == "positive"
    assert result["language"] == {"query": "de", "answer": "en"}


def test_relevance_tells_an_answer_to_the_question_from_one_to_another() -> None:
    question = "How do I reset my password?"
    on_topic = ["To reset your password, ", "open the sign-in page, ", "choose Forgot password ",
                "and follow the link ", "in the email we send you."]
    off_topic = ["Boil the pasta ", "in salted water ", "for nine minutes, ", "then drain it ",
                 "and add the tomato sauce."]
    spec = [Spec(processor="relevance", options={"every": 2})]
    got = {}
    for name, chunks in (("on", on_topic), ("off", off_topic)):
        out = stream(chunks, spec, PROCESSORS, for_job=job(question))
        meta = [ev.data["analysis"] for ev in out if ev.type == events.METADATA]
        assert [m["chunks"] for m in meta] == [2, 4]
        got[name] = out[-1].data["analysis"]["relevance"]
        assert out[-1].type == events.RESULT
        assert [ev.data["chunk"] for ev in out if ev.type == events.PARTIAL_RESULT] == chunks
    assert got["on"]["relevant"] and not got["off"]["relevant"], got
    assert got["on"]["score"] > got["off"]["score"] + 0.3, got
    strict = [Spec(processor="relevance", options={"threshold": 0.99})]
    assert not stream(on_topic, strict, PROCESSORS, for_job=job(question))[-1].data[
        "analysis"]["relevance"]["relevant"]


@pytest.mark.parametrize("options", [{"every": 0}, {"window": "x"}, {"threshold": 2},
                                     {"threshold": True}])
def test_relevance_refuses_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="relevance option"):
        Pipeline(job(), PROCESSORS, [Spec(processor="relevance", options=options)])


def test_a_relevance_run_resumed_from_its_state_scores_the_same() -> None:
    chunks = ["Streams resume ", "from the last ", "event id ", "the client saw, ",
              "so nothing is lost."]
    drafts = [Output(events.PARTIAL_RESULT, {"chunk": c, "chunkIndex": i,
                                             "isComplete": i == len(chunks) - 1})
              for i, c in enumerate(chunks)]
    drafts.append(Output(events.RESULT, {"text": "".join(chunks)}))
    specs = [Spec(processor="relevance", options={"every": 2, "window": 20})]

    def run(pipeline: Pipeline, start: int) -> list[tuple[Output, bytes]]:
        return [pair for src in range(start, len(drafts) + 1)
                for pair in pipeline.feed(src, drafts[src - 1])]

    first = run(Pipeline(job(), PROCESSORS, specs), 1)
    at = Position.decode(first[2][1])
    again = run(Pipeline.resume(job(), PROCESSORS, at), at.src)[at.part + 1:]
    assert [ev for ev, _ in first[:3]] + [ev for ev, _ in again] == [ev for ev, _ in first]


def test_a_pipeline_resumed_from_any_events_position_writes_the_same_events() -> None:
    text = ("Contact ahmed.khan@example.org or +44 20 7946 0958, card 5500 0055 5555 5559, "
            "you bastard. Thanks!")
    chunks = chunked(text, range(3, len(text), 7))
    drafts = [Output(events.STATUS, {"state": "running"})]
    drafts += [Output(events.PARTIAL_RESULT, {"chunk": c, "chunkIndex": i,
                                              "isComplete": i == len(chunks) - 1})
               for i, c in enumerate(chunks)]
    drafts.append(Output(events.RESULT, {"text": text}))
    specs = [*ALL[:2], Spec(processor="sentiment", options={"every": 3}), ALL[3]]

    def run(pipeline: Pipeline, start: int) -> list[tuple[Output, bytes]]:
        return [pair for src in range(start, len(drafts) + 1)
                for pair in pipeline.feed(src, drafts[src - 1])]

    first = run(Pipeline(job(), PROCESSORS, specs), 1)
    assert "[email]" in first[-1][0].data["text"]
    for n in range(len(first)):
        # The first owner wrote first[:n + 1] and died: the next one goes on from there.
        at = Position.decode(first[n][1])
        again = run(Pipeline.resume(job(), PROCESSORS, at), at.src)[at.part + 1:]
        assert [ev for ev, _ in first[:n + 1]] + [ev for ev, _ in again] == [
            ev for ev, _ in first]


def test_a_policy_naming_an_unloaded_processor_fails_closed() -> None:
    with pytest.raises(ProcessorUnavailable, match="'nope'"):
        Pipeline(job(), PROCESSORS, [Spec(processor="nope")])


def test_processors_load_from_entry_points() -> None:
    def ep(name: str, value: str) -> tuple[metadata.EntryPoint, str, str]:
        return (metadata.EntryPoint(name, value, "tidemark.processors"), "tidemark", "0.1.0")

    found = [ep("pii", "workers.filters:PiiProcessor"),
             ep("sentiment", "workers.insights:SentimentProcessor"),
             ep("wrong", "workers.filters:PiiProcessor"),
             ep("gone", "workers.nothing_here:X")]
    loaded, report = load_processors(found=found)
    assert set(loaded) == {"pii", "sentiment"}
    states = {s.plugin.name: (s.state, s.reason) for s in report}
    assert states["pii"] == (LOADED, "")
    assert states["wrong"] == (BROKEN, "PluginCheckError: its name is 'pii', not 'wrong'")
    assert states["gone"][0] == BROKEN
