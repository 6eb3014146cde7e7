"""The filtering processors: ``pii`` (emails, phone numbers, card numbers with a Luhn
check) and ``profanity`` (better-profanity's word list, whole words, any case). Each
finds its terms in a stream's ``partial_result`` chunks, also across chunk boundaries
(``workers.holdback``), and applies its policy's action:

- ``redact``: the term is replaced in the chunk (``[email]``, ``[phone]``, ``[card]``;
  a profane word by as many ``*``), and in the ``result``'s ``text``;
- ``block``: the stream ends with ``error`` ``content_blocked`` once ``threshold``
  terms (default 1) were found; nothing of the term is written;
- ``flag``: the text goes through as it is, and a ``metadata`` event
  ``{"contentFlag": {...}}`` follows the chunk that completed each term.

Chunks are re-cut only where the text must be held: a chunk whose end could still be
the start of a term keeps that end for the next one (an event whose whole chunk is held
is not written; ``chunkIndex`` counts the chunks written). Everything held is written
with the last chunk (``isComplete``), or before the terminal event.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Final

import regex

from eventlog.jobs import Job
from schemas import events
from workers.holdback import CONTEXT, Finding, Pattern, Scanner, luhn_valid, redact
from workers.processors import ACTIONS, Output, Spec

PII_KINDS: Final = ("email", "phone", "card")
#: Longest text a filter holds back (a longer pending match is released as it is).
MAX_HOLD: Final = 256

_PII_PATTERNS: Final = {
    # RFC 5321 local part (common subset) @ domain with at least one dot.
    "email": r"(?<![\w.+-])[A-Za-z0-9][\w.+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})"
             r"(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![\w-])",
    # 13 to 19 digits, optionally grouped by single spaces or dashes; Luhn-checked.
    "card": r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])",
    # International and national numbers: an optional +CC, an area code (parenthesised
    # or not), then groups separated by a space, dot or dash; 10 to 15 digits in all.
    "phone": r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{1,4}[ .-])"
             r"(?:\d{2,4}[ .-]){0,2}\d{3,4}(?![\w-])",
}
#: Characters no match of the kind contains.
_PII_STOP: Final = {"email": regex.compile(r"[^\w.+@-]"),
                    "card": regex.compile(r"[^\d -]"),
                    "phone": regex.compile(r"[^\d ().+-]")}
_PII_VALID: Final = {"card": luhn_valid,
                     "phone": lambda s: 10 <= sum(c.isdigit() for c in s) <= 15}


def pii_scanner(kinds: Sequence[str] = PII_KINDS) -> Scanner:
    order = [k for k in ("card", "email", "phone") if k in kinds]
    return Scanner([Pattern(k, regex.compile(_PII_PATTERNS[k]), stop=_PII_STOP[k],
                            horizon=MAX_HOLD, valid=_PII_VALID.get(k))
                    for k in order], max_hold=MAX_HOLD)


@functools.cache
def profanity_words() -> tuple[str, ...]:
    """better-profanity's word list (with its leetspeak variants), as shipped."""
    text = resources.files("better_profanity").joinpath(
        "profanity_wordlist.txt").read_text("utf-8")
    return tuple(sorted({w.strip().lower() for w in text.splitlines() if w.strip()}))


def profanity_scanner(extra: Sequence[str] = ()) -> Scanner:
    words = sorted({*profanity_words(), *(w.lower() for w in extra)}, key=len, reverse=True)
    alternation = "|".join(regex.escape(w) for w in words)
    pattern = regex.compile(rf"(?<![\w])(?:{alternation})(?![\w])", regex.IGNORECASE)
    # Some entries are phrases ("2 girls 1 cup"): a word match is final once a
    # character that is neither a word's nor a space follows, or the longest entry's
    # length of text does.
    return Scanner([Pattern("profanity", pattern, stop=regex.compile(r"[^\w\s]"),
                            horizon=max(map(len, words)) + 1)], max_hold=MAX_HOLD)


def _replacement(f: Finding, text: str) -> str:
    return "*" * len(text) if f.kind == "profanity" else f"[{f.kind}]"


class FilterRun:
    """One stream's filter: the text held back, what was released (its length, its last
    characters for look-behinds), the chunks written, the terms found."""

    def __init__(self, name: str, scanner: Scanner, spec: Spec,
                 state: Mapping[str, Any] | None) -> None:
        if spec.action not in ACTIONS:
            raise ValueError(f"action {spec.action!r} is not one of {', '.join(ACTIONS)}")
        self.name = name
        self.scanner = scanner
        self.action = spec.action
        self.threshold = max(1, int(spec.threshold or 1))
        st = dict(state or {})
        self.held: str = st.get("held", "")
        self.tail: str = st.get("tail", "")
        self.released: int = st.get("released", 0)
        self.chunks: int = st.get("chunks", 0)
        self.found: dict[str, int] = dict(st.get("found", {}))

    def state(self) -> dict[str, Any]:
        return {"held": self.held, "tail": self.tail, "released": self.released,
                "chunks": self.chunks, "found": dict(self.found)}

    def process(self, event: Output) -> list[Output]:
        if event.type == events.PARTIAL_RESULT:
            chunk = event.data.get("chunk")
            if isinstance(chunk, str):
                final = bool(event.data.get("isComplete"))
                return self._release(chunk, final, event.data)
        if events.is_terminal(event.type):
            out = self._release("", True, None) if self.held else []
            if out and events.is_terminal(out[-1].type):
                return out
            return [*out, self._terminal(event)]
        return [event]

    def _release(self, chunk: str, final: bool, data: dict[str, Any] | None) -> list[Output]:
        text = self.tail + self.held + chunk
        pos = len(self.tail)
        scan = self.scanner.scan(text, final=final, pos=pos)
        out: list[Output] = []
        flags: list[Output] = []
        for f in scan.findings:
            self.found[f.kind] = self.found.get(f.kind, 0) + 1
            offset = self.released + f.start - pos
            if self.action == "block" and sum(self.found.values()) >= self.threshold:
                self.held = ""
                return [Output(events.ERROR, {
                    "code": "content_blocked", "retryable": False,
                    "message": f"the answer was stopped by the {self.name} filter "
                               f"({f.kind})"})]
            if self.action == "flag":
                flags.append(Output(events.METADATA, {"contentFlag": {
                    "processor": self.name, "kind": f.kind, "start": offset,
                    "length": f.end - f.start, "chunkIndex": self.chunks}}))
        findings = scan.findings if self.action == "redact" else []
        piece = redact(text, findings, _replacement, start=pos, stop=scan.cut)
        self.held = text[scan.cut:]
        self.released += scan.cut - pos
        self.tail = (self.tail + text[pos:scan.cut])[-CONTEXT:]
        if piece or (final and data is not None):
            fields = dict(data or {})
            fields["chunk"] = piece
            fields["chunkIndex"] = self.chunks
            if data is None:
                fields["isComplete"] = True
            out.append(Output(events.PARTIAL_RESULT, fields))
            self.chunks += 1
        return out + flags

    def _terminal(self, event: Output) -> Output:
        if event.type != events.RESULT:
            return event
        data = dict(event.data)
        text = data.get("text")
        if isinstance(text, str) and self.action == "redact":
            data["text"] = redact(text, self.scanner.scan(text, final=True).findings,
                                  _replacement)
        if self.found:
            content = dict(data.get("content") or {})
            content[self.name] = {"action": self.action, "found": dict(self.found)}
            data["content"] = content
        return Output(event.type, data)


class PiiProcessor:
    """``pii``: options ``{"kinds": ["email", "phone", "card"]}`` (default all)."""

    name = "pii"

    def __init__(self) -> None:
        self._scanners: dict[tuple[str, ...], Scanner] = {}

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> FilterRun:
        kinds = tuple((spec.options or {}).get("kinds") or PII_KINDS)
        unknown = [k for k in kinds if k not in PII_KINDS]
        if unknown:
            raise ValueError(f"unknown pii kinds {unknown}")
        scanner = self._scanners.get(kinds)
        if scanner is None:
            scanner = self._scanners[kinds] = pii_scanner(kinds)
        return FilterRun(self.name, scanner, spec, state)


class ProfanityProcessor:
    """``profanity``: options ``{"extraWords": [...]}`` (a tenant's own blocklist)."""

    name = "profanity"

    def __init__(self) -> None:
        self._scanners: dict[tuple[str, ...], Scanner] = {}

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> FilterRun:
        extra = tuple(sorted((spec.options or {}).get("extraWords") or ()))
        scanner = self._scanners.get(extra)
        if scanner is None:
            if len(self._scanners) >= 64:  # bounded: tenants' word lists
                self._scanners.clear()
            scanner = self._scanners[extra] = profanity_scanner(extra)
        return FilterRun(self.name, scanner, spec, state)
