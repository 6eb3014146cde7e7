"""``python -m bench.serve gateway|kafka ...``: Tidemark's own CLI (``tidemark.cli.main``),
the same code path as ``python -m tidemark ...``.

The benchmark starts its broker and gateways through this module only so that their
command lines do not contain ``tidemark gateway`` / ``tidemark kafka``: a developer's
``pkill -f "tidemark gateway"`` elsewhere on the machine then leaves a running
benchmark alone.
"""

from __future__ import annotations

import sys

from tidemark.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
