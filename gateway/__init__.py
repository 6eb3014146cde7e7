"""The aiohttp gateway: SSE framing, routes, the fan-out hub, catch-up, limits, metrics."""
