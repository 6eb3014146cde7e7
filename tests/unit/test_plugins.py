"""Generator plugins: which installed entry points are used (allow-list, duplicates,
reserved and bad names), loading and checking them (a broken one is reported and the
others load), and ``tidemark plugins``. The entry points here name objects in
tests/plugins/samples.py; the e2e test installs a real plugin distribution."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest

from eventlog.errors import ConfigError
from eventlog.plugins import GENERATORS, PROCESSORS, discover, installed, parse_allow
from eventlog.settings import load_settings
from tests.unit.test_demo import job
from tidemark.cli import main
from workers.plugins import BROKEN, LOADED, REFUSED, load_generators

SAMPLES = "tests.plugins.samples"


def ep(name: str, obj: str, dist: str = "acme-plugins", group: str = GENERATORS,
       ) -> tuple[EntryPoint, str, str]:
    return EntryPoint(name, f"{SAMPLES}:{obj}", group), dist, "0.1"


def states(found: list[tuple[EntryPoint, str, str]], allow: str = "",
           ) -> dict[tuple[str, str], tuple[str, str]]:
    _, report = load_generators(parse_allow(allow), found)
    return {(s.plugin.name, s.plugin.dist): (s.state, s.reason) for s in report}


def test_the_built_in_demo_generator_is_an_installed_entry_point() -> None:
    rows = [(e.name, e.value, dist) for e, dist, _ in installed(GENERATORS)]
    assert ("demo", "workers.demo:DemoGenerator", "tidemark") in rows, \
        "stale install: run `pip install -e . --no-deps` to refresh the entry points"
    generators, _ = load_generators()
    assert generators["demo"].name == "demo"


async def test_a_good_plugin_loads_and_generates() -> None:
    generators, report = load_generators((), [ep("good", "Good")])
    assert [(s.plugin.name, s.state) for s in report] == [("good", LOADED)]
    drafts = [d async for d in generators["good"].events(job(query="q"), 2)]
    assert [(d.seq, d.type) for d in drafts] == [(2, "partial_result"), (3, "result")]


def test_broken_plugins_are_reported_and_the_others_still_load() -> None:
    found = [ep("good", "Good"), ep("wrong", "WrongName"), ep("noevents", "NoEvents"),
             ep("fails", "failing_factory"), ep("number", "NOT_CALLABLE"),
             (EntryPoint("gone", "tests.plugins.no_such_module:Thing", GENERATORS),
              "gone-dist", "9")]
    generators, report = load_generators((), found)
    assert list(generators) == ["good"]
    got = {s.plugin.name: (s.state, s.reason) for s in report}
    assert got["good"] == (LOADED, "")
    assert got["wrong"] == (BROKEN, "PluginCheckError: its name is "
                            "'not-the-entry-points-name', not 'wrong'")
    assert got["noevents"] == (BROKEN, "PluginCheckError: it has no events(job, start_seq) "
                               "method")
    assert got["fails"] == (BROKEN, "RuntimeError: the plugin's factory failed")
    assert got["number"][0] == BROKEN and "not a class or factory" in got["number"][1]
    assert got["gone"][0] == BROKEN and got["gone"][1].startswith("ModuleNotFoundError")


def test_two_distributions_with_one_name_are_both_refused_unless_one_is_picked() -> None:
    found = [ep("good", "Good", dist="first"), ep("good", "Good", dist="second"),
             ep("other", "Good", dist="second")]
    got = states(found)
    assert got[("good", "first")][0] == got[("good", "second")][0] == REFUSED
    assert "second also provides 'good'" in got[("good", "first")][1]
    assert "TIDEMARK_PLUGINS as good@<distribution>" in got[("good", "first")][1]
    # The allow-list picks one by its distribution; the other is refused, saying so.
    got = states(found, "good@second, other")
    assert got[("good", "second")] == (LOADED, "")
    assert got[("good", "first")] == (REFUSED, "TIDEMARK_PLUGINS picks good@second")
    # (``other``'s object is named "good": listed, but it fails its check.)
    assert got[("other", "second")][0] == BROKEN
    got = states(found, "good@first,good@second")
    assert got[("good", "first")][0] == got[("good", "second")][0] == REFUSED
    assert "of several distributions: first, second" in got[("good", "first")][1]


def test_the_allow_list_keeps_out_what_it_does_not_name_built_ins_too() -> None:
    found = [ep("good", "Good"), ep("demo", "Good", dist="tidemark")]
    got = states(found, "good")
    assert got[("good", "acme-plugins")] == (LOADED, "")
    assert got[("demo", "tidemark")] == (REFUSED, "not in TIDEMARK_PLUGINS")


def test_reserved_and_malformed_names_are_refused() -> None:
    got = states([ep("external", "Good"), ep("Bad Name", "Good")])
    assert got[("external", "acme-plugins")] == (REFUSED, "the name is reserved")
    assert got[("Bad Name", "acme-plugins")][1].startswith("the name does not match")


def test_other_groups_are_discovered_but_have_no_loader() -> None:
    rows = discover(PROCESSORS, (), [ep("upper", "Good", group=PROCESSORS)])
    assert [(p.group, p.name, p.refused) for p in rows] == [(PROCESSORS, "upper", "")]


def test_a_malformed_allow_list_is_a_config_error() -> None:
    assert load_settings({"TIDEMARK_PLUGINS": "echo, good@acme-plugins"}).plugin_allow \
        == frozenset({"echo", "good@acme-plugins"})
    with pytest.raises(ConfigError, match="TIDEMARK_PLUGINS"):
        load_settings({"TIDEMARK_PLUGINS": "echo@"})


def test_tidemark_plugins_lists_every_group_as_json(capsys: pytest.CaptureFixture[str],
                                                     ) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["plugins"]
    demo = next(p for p in listed if p["name"] == "demo")
    assert demo == {"group": GENERATORS, "name": "demo", "distribution": "tidemark",
                    "version": "0.1.0", "object": "workers.demo:DemoGenerator",
                    "status": "loaded", "reason": ""}
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "tidemark.generators:\n  demo" in text
    assert "tidemark.processors:" in text and "tidemark.webhook_signers:" in text
