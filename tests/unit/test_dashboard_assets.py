"""The dashboard's files: the vendored chart library is the npm package's, byte for byte;
the page references only files the gateway serves and ships; no inline script or style."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventlog.settings import AuthSettings, Settings
from gateway import dashboard
from gateway.app import create_app
from gateway.hardening import page_policy
from schemas import openapi

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "gateway" / "static"
NODE = REPO / "node_modules"

#: Vendored file -> the file of the npm package it copies (``make vendor``).
VENDORED = {
    "vendor/uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "vendor/uPlot.min.css": "uplot/dist/uPlot.min.css",
    "vendor/uPlot.LICENSE": "uplot/LICENSE",
}


def _lock() -> dict[str, dict[str, str]]:
    packages: dict[str, dict[str, str]] = orjson.loads(
        (REPO / "package-lock.json").read_bytes())["packages"]
    return packages


def test_the_vendored_chart_library_is_the_pinned_npm_package() -> None:
    pinned = orjson.loads((REPO / "package.json").read_bytes())["dependencies"]["uplot"]
    assert _lock()["node_modules/uplot"]["version"] == pinned
    installed = orjson.loads((NODE / "uplot" / "package.json").read_bytes())
    assert installed["version"] == pinned, "run `npm ci` (make setup)"
    for vendored, original in VENDORED.items():
        assert (STATIC / vendored).read_bytes() == (NODE / original).read_bytes(), vendored
    assert f"(v{pinned})" in (STATIC / "vendor/uPlot.iife.min.js").read_text()[:200]


def test_axe_core_is_pinned_for_the_browser_test() -> None:
    pinned = orjson.loads((REPO / "package.json").read_bytes())["devDependencies"]["axe-core"]
    assert _lock()["node_modules/axe-core"]["version"] == pinned
    installed = orjson.loads((NODE / "axe-core" / "package.json").read_bytes())
    assert installed["version"] == pinned, "run `npm ci` (make setup)"


def test_the_served_assets_are_the_documented_ones() -> None:
    assert sorted(dashboard.ASSETS) == sorted(openapi.DASHBOARD_ASSETS)


def test_the_package_ships_every_static_file() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["gateway"]
    files = [p.relative_to(REPO / "gateway").as_posix()
             for p in STATIC.rglob("*") if p.is_file()]
    assert "static/dashboard.html" in files
    for file in files:
        # setuptools globs: "*" does not cross "/".
        path = PurePosixPath(file)
        assert any(len(path.parts) == len(PurePosixPath(p).parts) and path.match(p)
                   for p in patterns), f"{file} is not package data"


def test_the_page_has_no_inline_script_or_style_and_names_served_files() -> None:
    html = (STATIC / "dashboard.html").read_bytes()
    policy = page_policy(html)
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert not re.search(rb"\sstyle\s*=|\son[a-z]+\s*=|javascript:", html, re.I)
    refs = re.findall(rb'(?:src|href)="(/dashboard/assets/[^"]+)"', html)
    assert {r.decode().rsplit("/", 1)[1] for r in refs} == set(dashboard.ASSETS)


# gateway.problems builds its responses with aiohttp's deprecated ``body=`` argument.
@pytest.mark.filterwarnings("ignore:body argument is deprecated:DeprecationWarning")
async def test_the_gateway_serves_the_page_and_its_assets_and_nothing_else() -> None:
    secret = "dashboard-test-secret-of-at-least-32-bytes"
    app = create_app(Settings(auth=AuthSettings(jwt_secret=secret)))
    # Only the routes: the Kafka side is not started (no cleanup_ctx) for static files.
    app.cleanup_ctx.clear()
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/dashboard")
        assert page.status == 200
        assert page.content_type == "text/html"
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp
        assert await page.read() == (STATIC / "dashboard.html").read_bytes()
        for name, (file, content_type) in dashboard.ASSETS.items():
            resp = await client.get(f"/dashboard/assets/{name}")
            assert resp.status == 200, name
            assert resp.content_type == content_type
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert await resp.read() == (STATIC / file).read_bytes()
        for name in ("uPlot.LICENSE", "..%2Fdashboard.html", "index.html", "nope.js"):
            resp = await client.get(f"/dashboard/assets/{name}")
            assert resp.status == 404, name
            assert resp.content_type == "application/problem+json"
