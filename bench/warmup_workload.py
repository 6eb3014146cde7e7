"""The workload of the ``warmup`` scenario: ``python -m bench.warmup_workload`` writes
``bench/data/warmup_sessions.jsonl`` (seeded: the same file every time).

Written for Tidemark, not taken from users. Three tenants (a support desk, a finance
team, a developer-docs assistant), each with six scripted flows of three or four
questions (two flows of a tenant may share their first question and part ways after
it). Fourteen days, in each 20 sessions per tenant at working hours (08-18 UTC); a
session's user follows one flow (more popular flows more often), asking each question a
few minutes after the last, in one of a few spellings (case, punctuation); at each step,
with probability ``DETOUR``, the user first asks something off the script (any of the
tenant's questions). A session stops early with probability ``QUIT`` per step.

Each line: ``{"tenant", "user", "ts" (ms), "query", "flow", "step"}``, in time order.
So the ceiling of any predictor on the follow-ups is about 1 - DETOUR (less for flows
that part ways after a shared question when only one guess is allowed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Final

from bench.procs import REPO

OUT: Final = REPO / "bench" / "data" / "warmup_sessions.jsonl"
SEED: Final = 20261203
DAYS: Final = 14
SESSIONS_PER_DAY: Final = 20
DETOUR: Final = 0.06
QUIT: Final = 0.05
DAY_MS: Final = 86_400_000

FLOWS: Final[dict[str, list[list[str]]]] = {
    "acme": [
        ["How do I reset my password?", "The reset email never arrived",
         "Can support reset it for me?"],
        ["How do I reset my password?", "Can I use my phone number instead of email?",
         "How do I turn on two-factor authentication?"],
        ["Where is my order?", "How long does shipping take?", "Can I change the delivery "
         "address?", "How do I return an item?"],
        ["How do I cancel my subscription?", "Will I get a refund?",
         "When does my access end?"],
        ["Why was my card declined?", "How do I update my payment method?",
         "Can I pay by invoice?"],
        ["How do I add a team member?", "What roles can I give them?",
         "How many seats does my plan have?"],
    ],
    "globex": [
        ["Summarise last quarter's revenue", "Break it down by region",
         "Which region grew fastest?", "Forecast next quarter for that region"],
        ["Summarise last quarter's revenue", "Compare it with the same quarter last year",
         "What drove the difference?"],
        ["List overdue invoices", "Which customers owe the most?",
         "Draft a reminder email to them"],
        ["What is our cash runway?", "How does it change if hiring pauses?",
         "Show the monthly burn trend"],
        ["Explain the new expense policy", "What is the meal allowance?",
         "How do I submit a receipt?"],
        ["Reconcile the bank statement for March", "Which transactions do not match?",
         "Create adjusting entries"],
    ],
    "initech": [
        ["How do I authenticate API requests?", "How do I rotate an API key?",
         "What scopes does a key need for webhooks?"],
        ["How do I authenticate API requests?", "Show an example with curl",
         "What does a 401 response mean?"],
        ["How do I paginate list endpoints?", "What is the maximum page size?",
         "How do I sort results?"],
        ["How do I set up webhooks?", "How do I verify a webhook signature?",
         "What happens when my endpoint is down?", "How do I replay failed deliveries?"],
        ["What are the rate limits?", "How do I read the Retry-After header?",
         "Can I get higher limits?"],
        ["How do I resume an interrupted stream?", "What is Last-Event-ID?",
         "How long are events kept?"],
    ],
}
#: How often each flow is picked, by its place in its tenant's list.
WEIGHTS: Final = (30, 18, 16, 14, 12, 10)


def spell(rng: random.Random, query: str) -> str:
    """One of a few spellings that normalise alike."""
    return rng.choice([query, query.lower(), query.rstrip("?") + " ?",
                       query.replace("?", "").strip()])


def generate(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for tenant, flows in FLOWS.items():
        pool = sorted({q for flow in flows for q in flow})
        for day in range(DAYS):
            for _ in range(SESSIONS_PER_DAY):
                user = f"{tenant}-u{rng.randrange(200)}"
                at = day * DAY_MS + rng.randrange(8 * 3600_000, 18 * 3600_000)
                index = rng.choices(range(len(flows)), WEIGHTS)[0]
                for step, query in enumerate(flows[index]):
                    if step and rng.random() < QUIT:
                        break
                    if rng.random() < DETOUR:
                        rows.append({"tenant": tenant, "user": user, "ts": at,
                                     "query": spell(rng, rng.choice(pool)), "flow": -1,
                                     "step": step})
                        at += rng.randrange(30_000, 180_000)
                    rows.append({"tenant": tenant, "user": user, "ts": at,
                                 "query": spell(rng, query), "flow": index, "step": step})
                    at += rng.randrange(30_000, 300_000)
    rows.sort(key=lambda r: (r["ts"], r["tenant"], r["user"]))
    return rows


def load(path: Path = OUT) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def main() -> None:
    rows = generate()
    OUT.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    print(f"{len(rows)} queries -> {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
