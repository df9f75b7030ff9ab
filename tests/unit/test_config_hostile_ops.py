"""Settings that used to pass `config validate` and fail later, in every process `qraft up` starts
(a store DSN of another database, a NATS URL without a host, windows no cron schedule makes, a start
between windows, an empty data folder): each is one ConfigError naming the file, the key and what
was expected, with no secret in it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qraft_core.config import ConfigError, load_qraft_config
from qraft_core.plugins import PluginError, load_plugins


def load(tmp_path: Path, settings: dict[str, Any]) -> Any:
    (tmp_path / "qraft.yaml").write_text(yaml.safe_dump(settings))
    return load_qraft_config(tmp_path, environ={})


def refusal(tmp_path: Path, settings: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, settings)
    return str(caught.value)


PARTITIONS = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-05T03:00:00Z"}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("a mysql DSN", {"store": {"dsn": "mysql://qraft:s3cr3tpw@db/events"}},
     "store.dsn: Value error, expected empty (the embedded store) or a DSN starting with chdb://, http:// or "
     "https:// (got 'mysql://qraft:***@db/events')"),
    ("a DSN port that is no number", {"store": {"dsn": "http://qraft:s3cr3tpw@ch:notaport/db"}},
     "store.dsn: Value error, expected a server URL with a host and an optional numeric port, e.g. "
     "http://clickhouse:8123 (got 'http://qraft:***@ch:notaport/db')"),
    ("a NATS URL without a host", {"nats": {"url": "nats://user:s3cr3tpw@:bad"}},
     "nats.url: Value error, expected a host name, e.g. nats://nats.example:4222 (got 'nats://user:***@:bad')"),
    ("a NATS port that is no number", {"nats": {"url": "nats://nats:42x2"}},
     "nats.url: Value error, expected a port number from 1 to 65535 after the host (got 42x2) (got 'nats://nats:42x2')"),
    ("a NATS URL of another scheme", {"nats": {"url": "http://nats:4222"}},
     "nats.url: Value error, expected a URL starting with nats://, tls://, ws:// or wss:// (got 'http://nats:4222')"),
    ("one bad seed of several", {"nats": {"url": ["nats://a:4222", "nats://:4222"]}},
     "nats.url: Value error, nats://:4222: expected a host name, e.g. nats://nats.example:4222"),
    ("websocket and plain seeds mixed", {"nats": {"url": "nats://a:4222,ws://b:8080"}},
     "nats.url: Value error, expected seed URLs of one kind: all nats:// or tls://, or all ws:// or wss:// "
     "(got 'nats://a:4222,ws://b:8080')"),
    ("windows of 7 minutes", {"partitions": {**PARTITIONS, "interval_minutes": 7}},
     "partitions.interval_minutes: Value error, expected a divisor of 60 or a whole number of hours dividing 24 (got 7)"),
    ("windows of 5 hours", {"partitions": {**PARTITIONS, "interval_minutes": 300}},
     "partitions.interval_minutes: Value error, expected a divisor of 60 or a whole number of hours dividing 24 "
     "(got 300)"),
    ("a start between two windows", {"partitions": {"interval_minutes": 15, "start": "2026-01-05T00:05:00Z",
                                                    "end": "2026-01-05T03:00:00Z"}},
     "partitions: Value error, start (2026-01-05T00:05:00+00:00) must lie on the grid of interval_minutes (15 min), "
     "e.g. 2026-01-05T00:00:00+00:00"),
    ("a fixed range past max_partitions", {"partitions": {"start": "1990-01-01T00:00:00Z",
                                                          "end": "2026-01-01T00:00:00Z"}},
     "partitions: Value error, start..end holds 18934560 windows of interval_minutes (1 min), more than "
     "max_partitions (30000): shorten the range, lengthen the windows or raise max_partitions"),
    ("windows of true minutes", {"partitions": {**PARTITIONS, "interval_minutes": True}},
     "partitions.interval_minutes: Value error, expected a number, not true (got True)"),
    ("an empty data folder", {"data_dir": ""},
     "data_dir: Value error, expected a folder path, not an empty string (got '')"),
]


@pytest.mark.parametrize(("settings", "expected"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_setting_that_fails_later_is_refused_naming_file_and_key(tmp_path, settings, expected):
    message = refusal(tmp_path, settings)
    assert message == f"{tmp_path / 'qraft.yaml'}: {expected}"
    assert "s3cr3tpw" not in message


@pytest.mark.parametrize("url", ["nats://a:4222", "tls://user:pw@a", "ws://a:8080,wss://b", "nats://[::1]:4222",
                                 "nats://token@a:4222, nats://b:4222"])
def test_nats_urls_the_client_accepts_are_accepted(tmp_path, url):
    assert load(tmp_path, {"nats": {"url": url}}).nats.url == url


@pytest.mark.parametrize("minutes", [1, 2, 5, 15, 30, 60, 120, 180, 360, 720, 1440])
def test_every_schedulable_window_length_is_accepted(tmp_path, minutes):
    config = load(tmp_path, {"partitions": {"interval_minutes": minutes, "start": "2026-01-05T00:00:00Z"}})
    assert config.partitions.interval_minutes == minutes


def test_an_empty_end_is_open_ended(tmp_path):
    assert load(tmp_path, {"partitions": {"start": "2026-01-05T00:00:00Z", "end": ""}}).partitions.end is None


def test_a_fixed_range_within_a_raised_max_partitions_is_accepted(tmp_path):
    partitions = {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "interval_minutes": 60,
                  "max_partitions": 60_000}
    assert load(tmp_path, {"partitions": partitions}).partitions.max_partitions == 60_000


def test_a_boolean_from_the_environment_is_refused_naming_the_variable(tmp_path):
    (tmp_path / "qraft.yaml").write_text("{}\n")
    with pytest.raises(ConfigError) as caught:
        load_qraft_config(tmp_path, environ={"QRAFT_LANDER_BATCH_SIZE": "yes"})
    assert str(caught.value) == ("$QRAFT_LANDER_BATCH_SIZE (environment): lander.batch_size: Value error, "
                                 "expected a number, not true (got True)")


@pytest.mark.parametrize(("raised", "told"), [
    ('RuntimeError("no licence file")', "RuntimeError: no licence file"),
    ('SystemExit("plugin exits the process at import")', "SystemExit: plugin exits the process at import"),
])
def test_a_plugin_raising_anything_at_import_is_one_plugin_error(tmp_path, monkeypatch, raised, told):
    (tmp_path / "qraft_raising_plugin.py").write_text(f"raise {raised}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as caught:
        load_plugins(["qraft_raising_plugin"])
    assert str(caught.value) == f"plugin 'qraft_raising_plugin' failed while loading: {told}"
    assert "qraft_raising_plugin" not in sys.modules


def test_a_raising_plugin_in_qraft_yaml_is_a_config_error(tmp_path, monkeypatch):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "qraft_keyerror_plugin.py").write_text("{}['vocabulary']\n")
    monkeypatch.syspath_prepend(str(plugin_dir))
    message = refusal(tmp_path, {"plugins": ["qraft_keyerror_plugin"]})
    assert message == (f"{tmp_path / 'qraft.yaml'}: plugins: plugin 'qraft_keyerror_plugin' failed while loading: "
                       "KeyError: 'vocabulary'")


def test_a_plugin_vocabulary_with_a_control_character_is_refused_naming_plugin_and_name(tmp_path, monkeypatch):
    (tmp_path / "qraft_vocab_plugin.py").write_text(
        "from qraft_core.explain.templates import register_vocabulary\n"
        "register_vocabulary({'en': {'load_zz': 'load\\u202e'}})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as caught:
        load_plugins(["qraft_vocab_plugin"])
    assert str(caught.value) == ("plugin 'qraft_vocab_plugin' failed while loading: UnsafeText: en field name "
                                 "'load_zz': its text holds control character U+202E")


def test_a_plugin_metric_named_with_a_newline_is_left_out_and_named(monkeypatch, caplog):
    from qraft_core.patterns.metrics import METRIC_SETS, metrics_for

    monkeypatch.setitem(METRIC_SETS._items, "evil", lambda columns: {
        "{x}\n# injected": ("load_mean", "delta"), "load level": ("load_mean", "delta")})
    metrics = metrics_for(["load_mean"])
    assert "{x}\n# injected" not in metrics and metrics["load level"] == ("load_mean", "delta")
    assert "metric set evil: metric '{x}\\n# injected' is left out: its name holds control character U+000A" \
        in caplog.text
