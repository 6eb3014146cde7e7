"""The similar-query cache's pure parts: normalisation, the scope key, the index
(threshold, tenant scoping, bounds, tombstones), TTL and the hot answers' byte bound.
The vectors come from the real embedder (eventlog.embeddings)."""

from __future__ import annotations

import pytest

from eventlog.cache import CacheEntry, CachePrefs, Scope, entry_key, matches, normalise
from eventlog.cache_index import CacheIndex
from eventlog.embeddings import DIM, MODEL_ID, shared_embedder
from eventlog.errors import ConfigError
from eventlog.index import StreamInfo
from eventlog.settings import load_settings
from workers.cache import HotAnswers, SourceEvent, fresh

#: The threshold the e2e tests and the bench sweep use (the default is 0.85).
THRESHOLD = 0.8


def entry(query: str, *, tenant: str = "acme", scope: Scope | None = None,
          stream: str = "s1", created_at: int = 1_000) -> CacheEntry:
    scope = scope or Scope(tenant=tenant, generator="demo", version="1", model=MODEL_ID)
    vector = shared_embedder().embed([query])[0]
    info = StreamInfo(stream_id=stream, namespace="ns", topic="t", partition=0,
                      first_offset=0, generator="demo", status="completed", created_at=0,
                      updated_at=0, terminal_offset=9, tenant=tenant)
    return CacheEntry(scope=scope.key, tenant=tenant, generator="demo", version="1",
                      query=query, norm=normalise(query), source=info,
                      created_at=created_at, vector=vector.astype("<f4").tobytes(),
                      model=MODEL_ID)


def test_normalise_folds_case_width_punctuation_and_spaces() -> None:
    assert normalise("  How do I  RESET my password?? ") == "how do i reset my password"
    assert normalise("\uff28\uff4f\uff57\tdo I reset my password") == "how do i reset my password"
    assert normalise("naïve café!") == "naïve café"
    assert normalise("?!...") == ""


def test_the_scope_key_changes_with_every_part_and_not_with_option_order() -> None:
    base = Scope(tenant="acme", generator="demo", version="1", options={"a": 1, "b": 2},
                 response_format="detailed", model=MODEL_ID)
    same = Scope(tenant="acme", generator="demo", version="1", options={"b": 2, "a": 1},
                 response_format="detailed", model=MODEL_ID)
    assert base.key == same.key
    for change in ({"tenant": "other"}, {"generator": "x"}, {"version": "2"},
                   {"options": {"a": 1}}, {"response_format": "concise"}, {"model": "m"}):
        fields = {"tenant": "acme", "generator": "demo", "version": "1",
                  "options": {"a": 1, "b": 2}, "response_format": "detailed",
                  "model": MODEL_ID, **change}
        assert Scope(**fields).key != base.key, change  # type: ignore[arg-type]
    assert entry_key(base.key, "q") != entry_key(same.key, "q2")


def test_an_entry_round_trips_and_damaged_records_are_not_entries() -> None:
    e = entry("what is kafka")
    assert CacheEntry.from_json(e.to_json()) == e
    assert CacheEntry.from_json(b"{}") is None
    assert CacheEntry.from_json(b"not json") is None
    assert CacheEntry.from_json(e.to_json().replace(b'"v":1', b'"v":2')) is None


def test_a_paraphrase_is_near_an_unrelated_query_is_not_and_scopes_never_mix() -> None:
    index = CacheIndex(dim=DIM, model=MODEL_ID, max_entries=100)
    source = entry("How do I reset my password?", stream="pw")
    index.put(source)
    index.put(entry("What will the weather be in Paris tomorrow?", stream="weather"))
    other = entry("How do I reset my password?", tenant="globex", stream="theirs")
    index.put(other)
    query = shared_embedder().embed(["What is the way to change my password?"])[0]

    near = index.nearest(source.scope, query)
    assert near[0].entry.stream_id == "pw" and near[0].similarity >= THRESHOLD
    assert all(c.similarity < THRESHOLD for c in near[1:])
    # Another tenant's identical query is in another scope: never a candidate.
    assert {c.entry.tenant for c in near} == {"acme"}
    assert index.exact(source.scope, normalise("how do I reset my PASSWORD")) == source
    assert index.exact(other.scope, source.norm) == other
    assert index.nearest(Scope(tenant="nobody", generator="demo", version="1",
                               model=MODEL_ID).key, query) == []


def test_the_index_is_bounded_and_a_tombstone_removes_an_entry() -> None:
    index = CacheIndex(dim=DIM, model=MODEL_ID, max_entries=2)
    first, second, third = (entry(q, stream=q) for q in ("alpha one", "beta two", "gamma"))
    for e in (first, second, third):
        index.apply(e.key, e.to_json())
    assert len(index) == 2 and index.exact(first.scope, first.norm) is None
    index.apply(second.key, None)
    assert [e.stream_id for e in index.entries()] == ["gamma"]
    assert [c.entry.stream_id for c in index.nearest(third.scope,
            shared_embedder().embed(["beta two"])[0])] == ["gamma"]
    # A record whose key is not its entry's is ignored (no entry under a foreign key).
    index.apply("0" * 32, first.to_json())
    assert len(index) == 1


def test_ttl() -> None:
    e = entry("q", created_at=10_000)
    assert fresh(e, 10_000 + 59_999, 60)
    assert not fresh(e, 10_000 + 60_000, 60)


def test_admin_deletes_match_only_the_callers_tenant() -> None:
    e = entry("How do I reset my password?", stream="pw")
    assert matches(e, tenant="acme", stream_id="pw")
    assert not matches(e, tenant="globex", stream_id="pw")
    assert matches(e, tenant="acme", norm=normalise("how do i reset my password"))
    assert not matches(e, tenant="acme", norm="something else")
    assert not matches(e, tenant="acme", norm=e.norm, generator="other")


def test_hot_answers_stay_within_their_bytes_most_recent_first() -> None:
    answer = [SourceEvent("partial_result", {"chunk": "x" * 100}, 0)] * 10
    size = 10 * (len(b'{"chunk":""}') + 100 + HotAnswers.PER_EVENT)
    hot = HotAnswers(max_bytes=2 * size)
    hot.put("a", answer)
    hot.put("b", answer)
    assert hot.get("a") is answer  # a is now the most recent
    hot.put("c", answer)
    assert hot.get("b") is None and hot.get("a") is answer and hot.get("c") is answer
    assert hot.bytes <= 2 * size
    HotAnswers(max_bytes=10).put("big", answer)  # larger than the whole: not kept


def test_cache_preferences_and_settings() -> None:
    assert CachePrefs.from_json({"use": False, "pacing": "original"}) == \
        CachePrefs(use=False, pacing="original")
    assert CachePrefs.from_json({"pacing": "warp"}) == CachePrefs()
    assert CachePrefs.from_json(None) == CachePrefs()
    settings = load_settings({"TIDEMARK_CACHE_GENERATOR_VERSIONS": "demo=2, talk=b"})
    assert settings.cache.versions == {"demo": "2", "talk": "b"}
    for bad in ({"TIDEMARK_CACHE_GENERATOR_VERSIONS": "demo"},
                {"TIDEMARK_CACHE_THRESHOLD": "1.5"}, {"TIDEMARK_CACHE_PACING": "warp"},
                {"TIDEMARK_CACHE_TTL": "0"}):
        with pytest.raises(ConfigError):
            load_settings(bad)
