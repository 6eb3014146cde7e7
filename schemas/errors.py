"""The root of Tidemark's one exception tree, in the lowest layer so all may use it."""

from __future__ import annotations


class TidemarkError(Exception):
    """Root of every error Tidemark raises.

    ``retriable`` says whether the same call may succeed later, as in aiokafka's
    ``KafkaError``. The HTTP layer maps these classes to problem responses in one place.
    """

    retriable: bool = False
