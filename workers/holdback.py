"""Finding patterns in text that arrives in chunks, holding back as little as possible.

A :class:`Scanner` holds regular expressions (the ``regex`` module: it can tell a
*partial* match, one that reached the end of the text and could still complete with
more of it). :meth:`Scanner.scan` of the text not released yet says up to where the
text is final (``cut``) and what was found before it. Everything from the start of the
earliest match that could still change is held back: a partial match, or a complete
one that no character outside the pattern's alphabet follows yet (a longer number, an
address whose domain goes on, a word that goes on: ``Pattern.stop``, ``horizon``),
for the next chunk. So a term split across chunk boundaries is found, and what is
held is only a suffix that is a prefix of some pattern's match. At the end of the
text everything is final.

The cut never splits a grapheme cluster (``\\X``), nor a match. ``max_hold`` bounds what
is held: past it the text is released as it is (documented in docs/content.md).

The property the tests hold (tests/unit/test_holdback.py): released chunk by chunk, at
any split positions, the findings and the redacted text are those of the whole text
scanned at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import regex

#: How many characters of released text a scan sees before the pending text, so that
#: look-behinds (word boundaries) at its start are right.
CONTEXT: Final = 16
_GRAPHEME: Final = regex.compile(r"\X")
_NON_WORD: Final = regex.compile(r"\W")


class Finding(NamedTuple):
    """A match: ``[start, end)`` in the scanned text, and its pattern's kind."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class Pattern:
    kind: str
    rx: regex.Pattern[str]
    #: A character no match of the pattern contains: a complete match is final once
    #: one follows it (before that a longer match may still start at the same place).
    stop: regex.Pattern[str] = _NON_WORD
    #: ... or once this many characters follow it.
    horizon: int = 256
    #: A check of the matched text (a card number's Luhn digit); None: every match.
    valid: Callable[[str], bool] | None = None


class Scan(NamedTuple):
    #: The text before ``cut`` is final; the rest is held back.
    cut: int
    #: Non-overlapping findings, all ending at or before ``cut``, in order.
    findings: list[Finding]


class Scanner:
    def __init__(self, patterns: Sequence[Pattern], *, max_hold: int = 256) -> None:
        self.patterns = tuple(patterns)
        self.max_hold = max_hold

    def scan(self, text: str, *, final: bool, pos: int = 0) -> Scan:
        """Scan ``text[pos:]`` (``text[:pos]``: released context for look-behinds);
        positions are in ``text``. ``final``: no more text follows."""
        end = len(text)
        cut = end
        found: list[Finding] = []
        for pattern in self.patterns:
            for m in pattern.rx.finditer(text, pos, partial=not final):
                start, stop = m.span()
                if not final and (m.partial or (start < stop and not _settled(
                        pattern, text, stop))):
                    cut = min(cut, start)
                    continue
                if start == stop or (pattern.valid is not None
                                     and not pattern.valid(m.group())):
                    continue
                found.append(Finding(start, stop, pattern.kind))
        if not final and end - cut > self.max_hold:
            cut = end - self.max_hold
        # Leftmost, then longest, wins; the others overlapping it are dropped.
        found.sort(key=lambda f: (f.start, -f.end))
        kept: list[Finding] = []
        for f in found:
            if not kept or f.start >= kept[-1].end:
                kept.append(f)
        if not final:
            cut = _grapheme_floor(text, max(cut, pos), pos)
            # A finding that crosses the cut is held whole.
            for f in kept:
                if f.start < cut < f.end:
                    cut = f.start
                    break
            kept = [f for f in kept if f.end <= cut]
        return Scan(cut, kept)


def _settled(pattern: Pattern, text: str, stop: int) -> bool:
    """Whether a complete match ending at ``stop`` can no longer grow: a character
    that no match contains, or ``pattern.horizon`` characters, follow it."""
    return (len(text) - stop >= pattern.horizon
            or pattern.stop.search(text, stop, stop + pattern.horizon) is not None)


def _grapheme_floor(text: str, cut: int, pos: int) -> int:
    """``cut``, or the start of the grapheme cluster of ``text[pos:]`` it falls in."""
    if cut >= len(text) or cut <= pos:
        return cut
    # Only the cluster around the cut matters: scan from a little before it.
    start = max(pos, cut - 64)
    for m in _GRAPHEME.finditer(text, start):
        if m.end() > cut:
            return m.start() if m.start() < cut else cut
    return cut


def redact(text: str, findings: Sequence[Finding], replace: Callable[[Finding, str], str],
           *, start: int = 0, stop: int | None = None) -> str:
    """``text[start:stop]`` with each finding (inside it) replaced by ``replace``."""
    stop = len(text) if stop is None else stop
    out: list[str] = []
    at = start
    for f in findings:
        if f.start < start or f.end > stop:
            continue
        out.append(text[at:f.start])
        out.append(replace(f, text[f.start:f.end]))
        at = f.end
    out.append(text[at:stop])
    return "".join(out)


def luhn_valid(number: str) -> bool:
    """A card number's check digit (ISO/IEC 7812): spaces and dashes are ignored; 12 to
    19 digits."""
    digits = [int(c) for c in number if c.isdigit()]
    if not 12 <= len(digits) <= 19 or len(digits) != sum(1 for c in number
                                                           if c not in " -"):
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def graphemes(text: str) -> list[str]:
    """``text`` split into grapheme clusters (user-perceived characters)."""
    return [m.group() for m in _GRAPHEME.finditer(text)]
