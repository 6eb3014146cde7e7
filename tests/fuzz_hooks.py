"""Schemathesis hooks of the fuzz run, loaded through ``SCHEMATHESIS_HOOKS``: count every
request by operation and status, and write the counts to ``FUZZ_COUNTS_FILE`` at exit
(tests/fuzz.py reads them: schemathesis itself reports test cases, not requests)."""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading
from typing import Any

import schemathesis

_COUNTS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    key = f"{response.request.method} {case.operation.path} {response.status_code}"
    with _LOCK:
        _COUNTS[key] += 1


def _write() -> None:
    path = os.environ.get("FUZZ_COUNTS_FILE")
    if path:
        with _LOCK:
            text = json.dumps(dict(_COUNTS))
        with open(path + ".tmp", "w") as out:
            out.write(text)
        os.replace(path + ".tmp", path)


atexit.register(_write)
