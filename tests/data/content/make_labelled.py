"""Writes labelled.jsonl beside this file: texts with the terms the content filters must
find, labelled by construction (each text is built from templates with the term put in
at a known place), not by running the filters.

Run: ``.venv/bin/python tests/data/content/make_labelled.py`` (seeded: the same file
every time). Each line: ``{"id", "text", "labels": [{"start", "end", "kind"}],
"expected": <the text with each label redacted>}``; kinds ``email``, ``phone``, ``card``,
``profanity``. Redaction: ``[kind]`` for PII, as many ``*`` as the word has for
profanity. Negatives (no label) are near misses: card-like numbers that fail the Luhn
check, dates, versions, prices, order numbers, words that contain a profane word
(``Scunthorpe``, ``assessment``), addresses written out in words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("labelled.jsonl")

FIRST = ["john", "maria", "li", "ahmed", "olga", "sam", "yuki", "fatima", "noah", "ines"]
LAST = ["doe", "garcia", "wei", "hassan", "ivanova", "lee", "tanaka", "khan", "smith", "silva"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.net",
           "uni.example.edu"]
PHONES = ["+1 415-555-0132", "(415) 555-0198", "415.555.0147", "+44 20 7946 0958",
          "+49 30 1234 5678", "212-555-0176", "+33 1 4567 8910", "(020) 7946 0321",
          "+1 (646) 555-0111", "+61 2 9876 5432"]
# Profane words from better-profanity's list (single words; the list lacks some, e.g.
# "bollocks": a tenant adds those with the profanity processor's extraWords).
PROFANE = ["shit", "asshole", "bastard", "bitch", "crap", "damn", "dick", "bullshit",
           "fuck", "wanker", "arse", "prick", "twat", "slut"]
FILLER = ("the stream of events flows through kafka and every gateway serves it to readers "
          "who resume exactly where they stopped offsets are positions in an ordered log "
          "partitions keep each answer in order while workers write tokens").split()
NEAR_MISSES = [
    "Scunthorpe", "assessment", "classic", "passage", "cockpit", "shitake", "Dickens",
    "order #4411-2290", "on 2026-12-02 at 10:45", "version v1.2.3", "costs $1,299.99",
    "ticket 12345678", "ISBN 978-3-16-148410-0", "server 10.0.0.1", "room 101",
    "john at example dot com", "call extension 4412", "zip code 94103",
]
CONTEXTS = [
    ("Please contact {x} for details.", None),
    ("Sure, my {w} is {x} and that is all.", None),
    ("{f} {x} {f}", None),
    ("请联系 {x} 谢谢。", None),
    ("مرحبا، الرقم هو {x} شكرا", None),
    ("Here: {x}.", None),
    ("({x})", None),
    ("{x}", None),
]


def luhn_digit(digits: str) -> str:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(rng: random.Random, valid: bool) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = body + check
    sep = rng.choice(["", " ", "-"])
    if length == 15:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i:i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def email(rng: random.Random) -> str:
    name = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
    if rng.random() < 0.3:
        name += f"+{rng.choice(['news', 'work', 'x1'])}"
    return f"{name}@{rng.choice(DOMAINS)}"


def filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n))


def one(rng: random.Random, kind: str | None) -> tuple[str, str]:
    if kind == "email":
        return email(rng), "email address"
    if kind == "phone":
        return rng.choice(PHONES), "phone number"
    if kind == "card":
        return card(rng, True), "card number"
    if kind == "profanity":
        word = rng.choice(PROFANE)
        return (word.upper() if rng.random() < 0.2 else word), "word"
    near = rng.choice([*NEAR_MISSES, card(rng, False), card(rng, False)])
    return near, "note"


def build(rng: random.Random, kinds: list[str | None]) -> dict[str, Any]:
    parts: list[str] = []
    labels: list[dict[str, Any]] = []
    expected: list[str] = []
    at = 0
    for n, kind in enumerate(kinds):
        template, _ = rng.choice(CONTEXTS)
        x, what = one(rng, kind)
        before, after = template.split("{x}")
        before = before.replace("{w}", what).replace("{f}", filler(rng, 3))
        after = after.replace("{f}", filler(rng, 3))
        sep = " " if n else ""
        lead = sep + before
        parts.append(lead)
        expected.append(lead)
        at += len(lead)
        if kind is not None:
            labels.append({"start": at, "end": at + len(x), "kind": kind})
            expected.append("*" * len(x) if kind == "profanity" else f"[{kind}]")
        else:
            expected.append(x)
        parts.append(x + after)
        expected.append(after)
        at += len(x) + len(after)
    return {"text": "".join(parts), "labels": labels, "expected": "".join(expected)}


def main() -> None:
    rng = random.Random(20261202)
    rows = []
    kinds: list[str | None] = ["email", "phone", "card", "profanity", None]
    for i in range(200):
        count = rng.choice([1, 1, 2, 3])
        row = build(rng, [rng.choice(kinds) for _ in range(count)])
        rows.append({"id": i, **row})
    with OUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} texts to {OUT}")  # noqa: T201 - a script


if __name__ == "__main__":
    main()
