"""The JavaScript SDK's committed files are what its sources make: src/schema.ts is a
fresh `npm run gen` from schemas/json, dist/ a fresh `npm run build`, and the gateway's
copy of the browser bundle (gateway/static/vendor/) is dist's, served to the demo page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventlog.settings import AuthSettings, Settings
from gateway.app import create_app
from gateway.routes import DEMO_ASSETS
from schemas import openapi

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "clients" / "js"
BUNDLE = "tidemark-client.browser.js"


def _node(*args: str) -> None:
    assert (JS / "node_modules" / ".bin").is_dir(), "run `npm ci` in clients/js (make setup)"
    subprocess.run(["node", *args], cwd=JS, check=True, timeout=60)


def test_the_types_are_generated_from_the_schemas(tmp_path: Path) -> None:
    _node("scripts/gen.mjs", str(tmp_path / "schema.ts"))
    assert (tmp_path / "schema.ts").read_text() == (JS / "src" / "schema.ts").read_text(), \
        "src/schema.ts is stale: run `npm run gen` in clients/js and commit it"


def test_dist_is_a_fresh_build_of_the_sources(tmp_path: Path) -> None:
    _node("scripts/build.mjs", str(tmp_path / "dist"))
    built = {p.relative_to(tmp_path / "dist"): p.read_bytes()
             for p in (tmp_path / "dist").rglob("*") if p.is_file()}
    committed = {p.relative_to(JS / "dist"): p.read_bytes()
                 for p in (JS / "dist").rglob("*") if p.is_file()}
    assert sorted(built) == sorted(committed)
    stale = [str(name) for name, body in built.items() if committed[name] != body]
    assert not stale, f"dist/ is stale ({stale}): run `npm run build` in clients/js and commit"


def test_the_gateway_ships_the_browser_bundle_of_dist() -> None:
    vendored = REPO / "gateway" / "static" / "vendor" / BUNDLE
    assert vendored.read_bytes() == (JS / "dist" / BUNDLE).read_bytes(), \
        "copy clients/js/dist/tidemark-client.browser.js to gateway/static/vendor/"
    assert sorted(DEMO_ASSETS) == sorted(openapi.DEMO_ASSETS)


def test_the_dependencies_are_pinned_by_the_lock_file() -> None:
    package = orjson.loads((JS / "package.json").read_bytes())
    lock = orjson.loads((JS / "package-lock.json").read_bytes())["packages"]
    pinned = {**package["devDependencies"], **package["optionalDependencies"]}
    for name, version in pinned.items():
        assert lock[f"node_modules/{name}"]["version"] == version, name


# gateway.problems builds its responses with aiohttp's deprecated ``body=`` argument.
@pytest.mark.filterwarnings("ignore:body argument is deprecated:DeprecationWarning")
async def test_the_demo_page_gets_the_bundle_and_nothing_else() -> None:
    secret = "js-sdk-test-secret-of-32-bytes-or-more"
    app = create_app(Settings(auth=AuthSettings(jwt_secret=secret)))
    app.cleanup_ctx.clear()  # static files only: the Kafka side is not started
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/demo/assets/tidemark-client.js")
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert await resp.read() == (JS / "dist" / BUNDLE).read_bytes()
        page = await client.get("/")
        assert b'src="/demo/assets/tidemark-client.js"' in await page.read()
        for name in ("tidemark-client.browser.js", "..%2Findex.html", "nope.js"):
            resp = await client.get(f"/demo/assets/{name}")
            assert resp.status == 404 and resp.content_type == "application/problem+json", name


def test_the_sdks_pure_parts_in_node() -> None:
    """SSE parsing at every split point, and the typed errors (clients/js/test/unit.mjs)."""
    out = subprocess.run(["node", "test/unit.mjs"], cwd=JS, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert orjson.loads(out) == {"ok": True}
