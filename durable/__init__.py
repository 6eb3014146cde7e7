"""The Durable Streams HTTP protocol served from Tidemark's Kafka log.

Layered like ``gateway``: it imports ``schemas`` and ``eventlog``, never ``gateway``
(and ``gateway`` never imports it); ``tidemark.cli`` mounts it on every gateway app.
"""
