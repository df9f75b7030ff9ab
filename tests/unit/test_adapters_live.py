"""What every live source shares: configuration checks, credentials, TLS, backoff, state."""

from __future__ import annotations

import random
import shutil
import ssl
from pathlib import Path

import pytest
import yaml

from qraft_core.adapters.live import Backoff, JsonState, NetworkOptions, ssl_context
from qraft_core.adapters.registry import build_adapter
from qraft_core.config import ConfigError, SourceConfig, load_sources

REPO = Path(__file__).resolve().parents[2]


def sources_file(tmp_path: Path, *sources: dict) -> Path:
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": list(sources)}))
    return tmp_path


def test_the_bundled_examples_are_valid(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "sources.examples.yaml", tmp_path / "sources.yaml")
    sources = load_sources(tmp_path).sources
    assert [(s.name, s.type, s.enabled) for s in sources] == [
        ("binance_ws", "websocket", False), ("binance_klines", "websocket", False),
        ("fx_rates", "rest", False),
        ("orders_db", "database", False), ("sensor_sqlite", "database", False), ("drops", "watcher", False),
    ]


@pytest.mark.parametrize(("source", "message"), [
    ({"name": "x", "type": "ftp", "endpoint": "ftp://h"},
     "sources[0].type: unknown source type 'ftp' (known: database, file, rest, watcher, websocket)"),
    ({"name": "x", "type": "websocket"},
     "sources[0].endpoint: expected a ws:// or wss:// URL (got '')"),
    ({"name": "x", "type": "rest", "endpoint": "ws://h"},
     "sources[0].endpoint: expected an http:// or https:// URL (got 'ws://h')"),
    ({"name": "x", "type": "database", "endpoint": "not a url", "options": {"table": "t"}},
     "sources[0].endpoint: expected a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
     "(Could not parse SQLAlchemy URL from given URL string)"),
    ({"name": "x", "type": "database", "endpoint": "sqlite:///a.db"},
     "sources[0].options: table: Field required"),
    ({"name": "x", "type": "database", "endpoint": "sqlite:///a.db", "options": {"table": "t; drop"}},
     "sources[0].options: table: Value error, name 't; drop' is not a plain identifier"),
    ({"name": "x", "type": "rest", "endpoint": "https://h/{key}"},
     "sources[0].endpoint: placeholder {key} is not declared in credentials"),
    ({"name": "x", "type": "rest", "endpoint": "https://h", "options": {"records": "$..a"}},
     "sources[0].options: records: Value error, path '$..a': cannot read '..a'"),
    ({"name": "x", "type": "websocket", "endpoint": "ws://h", "options": {"symbol": ["BTCUSDT"]}},
     "sources[0].options: symbol: an unknown key (check the spelling)"),
    ({"name": "x", "type": "watcher", "endpoint": "in",
      "options": {"backoff_initial_s": 5, "backoff_max_s": 1}},
     "sources[0].options: <top>: Value error, backoff_max_s must be at least backoff_initial_s"),
])
def test_bad_sources_are_rejected_with_file_key_and_expectation(
    tmp_path: Path, source: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sources(sources_file(tmp_path, source))
    assert str(caught.value).startswith(f"{tmp_path / 'sources.yaml'}: {message}")


@pytest.mark.parametrize(("kind", "endpoint", "options"), [
    ("websocket", "wss://h/ws", {}),
    ("rest", "https://h/api", {}),
    ("database", "postgresql+psycopg://u:{password}@h/db", {"table": "t"}),
    ("watcher", "folder", {}),
])
def test_a_missing_credential_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, endpoint: str, options: dict
) -> None:
    monkeypatch.delenv("QRAFT_TEST_UNSET", raising=False)
    source = SourceConfig(name="s", type=kind, endpoint=endpoint, options=options,
                          credentials={"password": "QRAFT_TEST_UNSET"})
    with pytest.raises(ConfigError, match="source s: credentials.password: environment variable "
                                          "QRAFT_TEST_UNSET is not set"):
        build_adapter(source, tmp_path)


def test_secrets_fill_the_endpoint_url_quoted_and_headers_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRAFT_TEST_PW", "p@ss/word")
    monkeypatch.setenv("QRAFT_TEST_TOKEN", "t0k en")
    source = SourceConfig(name="s", type="rest", endpoint="https://u:{pw}@h/api",
                          credentials={"pw": "QRAFT_TEST_PW", "token": "QRAFT_TEST_TOKEN"},
                          options={"headers": {"Authorization": "Bearer {token}"}})
    adapter = build_adapter(source, tmp_path)
    assert adapter.endpoint == "https://u:p%40ss%2Fword@h/api"  # type: ignore[attr-defined]
    assert adapter.headers == {"Authorization": "Bearer t0k en"}  # type: ignore[attr-defined]
    assert "p@ss" not in source.model_dump_json()


def test_tls_verifies_by_default_and_names_a_missing_ca_file(tmp_path: Path) -> None:
    assert ssl_context(NetworkOptions()).verify_mode == ssl.CERT_REQUIRED
    relaxed = ssl_context(NetworkOptions(verify=False))
    assert (relaxed.verify_mode, relaxed.check_hostname) == (ssl.CERT_NONE, False)
    with pytest.raises(ConfigError, match="options.ca_file: .*nope.pem does not exist"):
        ssl_context(NetworkOptions(ca_file=tmp_path / "nope.pem"))


def test_backoff_doubles_with_jitter_up_to_the_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not in lock-step
    backoff.reset()
    assert backoff.next() <= 0.5


def test_state_is_written_atomically_and_a_corrupt_file_is_reported(tmp_path: Path) -> None:
    state = JsonState(tmp_path / "deep" / "s.json")
    assert state.load() == {}
    state.save({"cursor": [1]})
    assert state.load() == {"cursor": [1]}
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["s.json"]
    state.path.write_text("{half")
    with pytest.raises(ConfigError, match="state file is not JSON"):
        state.load()
