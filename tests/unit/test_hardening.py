"""The pure parts of gateway/hardening.py: the CORS setting, the pages' CSP, the options
handed to aiohttp's request handler. (tests/e2e/test_hardening.py checks the behaviour
on a real gateway over real sockets.)"""

from __future__ import annotations

import base64
import hashlib

from eventlog.settings import GatewaySettings
from gateway.hardening import MAX_HEADERS, Cors, page_policy, server_options


def test_cors_setting_lists_origins_or_allows_any() -> None:
    cors = Cors.parse(" https://a.example, https://b.example/ ,")
    assert cors.origins == {"https://a.example", "https://b.example"}
    assert not cors.any_origin
    assert cors.allows("https://a.example") and not cors.allows("https://c.example")
    assert not Cors.parse("").allows("https://a.example")
    anyone = Cors.parse("*")
    assert anyone.allows("https://c.example")


def test_credentials_only_for_listed_origins() -> None:
    listed = Cors.parse("https://a.example").headers("https://a.example")
    assert listed["Access-Control-Allow-Origin"] == "https://a.example"
    assert listed["Access-Control-Allow-Credentials"] == "true"
    anyone = Cors.parse("*").headers("https://c.example")
    assert anyone["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in anyone


def _sha(text: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode() + "'"


def test_the_page_policy_allows_exactly_the_pages_inline_blocks() -> None:
    html = (b"<html><style>body{color:red}</style><script>alert(1)</script>"
            b"<script src=/x.js></script><SCRIPT type=module>go()</SCRIPT></html>")
    policy = dict(d.strip().split(" ", 1) for d in page_policy(html).split(";"))
    scripts = policy["script-src"].split()
    assert scripts == ["'self'", _sha(b"alert(1)"), _sha(b"go()")]
    assert policy["style-src"].split() == ["'self'", _sha(b"body{color:red}")]
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"


def test_server_options_bound_lines_headers_and_slow_requests() -> None:
    gw = GatewaySettings(max_header_bytes=2000, max_url_bytes=1000, body_timeout_s=3.0)
    opts = server_options(gw)
    assert opts["max_field_size"] == 2000 and opts["max_line_size"] == 2000
    assert opts["max_headers"] == MAX_HEADERS
    assert opts["keepalive_timeout"] == 3.0 and opts["lingering_time"] == 1.0
    # A URL limit above the header limit still reaches the 414 check, not the parser.
    assert server_options(GatewaySettings(max_header_bytes=2000, max_url_bytes=5000))[
        "max_line_size"] == 5032
