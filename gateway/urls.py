"""Where a stream is read on each transport (the ``urls`` of ``POST /v1/streams``)."""

from __future__ import annotations


def transport_urls(stream_id: str, query: str = "") -> dict[str, str]:
    """The stream's URL on each transport, ``query`` (e.g. a read token) on each:
    ``sse`` (``GET .../events``), ``ws`` (``GET .../ws``, a WebSocket), ``poll``
    (``GET .../poll``, long-poll)."""
    base = f"/v1/streams/{stream_id}"
    suffix = f"?{query}" if query else ""
    return {"sse": f"{base}/events{suffix}", "ws": f"{base}/ws{suffix}",
            "poll": f"{base}/poll{suffix}"}
