"""Secrets never reach a message: URLs, query parameters, bearer tokens, secret environment values."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest

from qraft_core.redact import install_redaction, redact
from qraft_core.store import ClickHouseStore
from qraft_core.store.sessions import ServerClients


@pytest.mark.parametrize(
    "text, expected",
    [
        ("http://qraft:hunter22@ch.internal:8123/qraft", "http://qraft:***@ch.internal:8123/qraft"),
        ("https://u:p%40ss@h/db?secure=1", "https://u:***@h/db?secure=1"),
        (
            "nats://svc:n4ts-pass@n1:4222,nats://svc:n4ts-pass@n2:4222",
            "nats://svc:***@n1:4222,nats://svc:***@n2:4222",
        ),
        ("nats://s3cr3t-token@nats:4222", "nats://***@nats:4222"),
        ("--dsn=-http://u:hunter22@h", "--dsn=-http://u:***@h"),
        ("http://h:8123/?user=a&password=topsecret&x=1", "http://h:8123/?user=a&password=***&x=1"),
        (
            "401 from endpoint: Authorization: Bearer sk-live-123",
            "401 from endpoint: Authorization: Bearer ***",
        ),
        ("http://plain.host:8123/db", "http://plain.host:8123/db"),
        # A base64 password holds `/`; the user information ends at the last `@` before the host.
        (
            "http://qraft:Zm9v/YmFy+YQ==@clickhouse:8123/default",
            "http://qraft:***@clickhouse:8123/default",
        ),
        ("nats://user:pa/ss@nats:4222", "nats://user:***@nats:4222"),
        ("http://u:p@ss/w@rd@h:1/db", "http://u:***@h:1/db"),
        ("got 'nats://a:x/y@n1:4222,nats://a:x/y@n2:4222'", "got 'nats://a:***@n1:4222,nats://a:***@n2:4222'"),
        # An `@` in a path or a query is not user information.
        ("http://u:pw@h/x?mail=a@b.org", "http://u:***@h/x?mail=a@b.org"),
        ("http://h:8123/find?mail=a@b.org", "http://h:8123/find?mail=a@b.org"),
        ("see https://h/users/@alice", "see https://h/users/@alice"),
        # A port followed by a path is not a password, even with an `@` further on.
        ("GET http://api:8800/users/@alice", "GET http://api:8800/users/@alice"),
        ("https://registry.npmjs.org:443/@types/node", "https://registry.npmjs.org:443/@types/node"),
        ("http://qraft:8800pw/x@ch:8123/db", "http://qraft:***@ch:8123/db"),
        ("no secret here", "no secret here"),
    ],
)
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    [
        # Scheme-like runs (`a-a-a-...://`, `a.a.a...://`) before a long path: a scan that restarts at
        # every character of the run takes minutes on these; a linear one takes milliseconds.
        "a-" * 4000 + "a://u:" + "/x" * 100_000,
        "a." * 100_000 + "://",
    ],
)
def test_a_long_hostile_message_is_redacted_in_one_pass(text: str) -> None:
    assert redact(text) == text


def test_values_of_secret_environment_variables_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRAFT_LLM_API_KEY", "sk-proj-abcdef123456")
    monkeypatch.setenv("QRAFT_STORE_PASSWORD", "pa55word!")
    monkeypatch.setenv("QRAFT_MODE", "production-mode")  # not a secret by its name
    text = "upstream said: invalid key sk-proj-abcdef123456 (pa55word!) in production-mode"
    assert redact(text) == "upstream said: invalid key *** (***) in production-mode"


def test_a_secret_is_masked_in_its_escaped_forms_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret file's value keeps its trailing newline; an HTTP library's error quotes it escaped.
    monkeypatch.setenv("SERVICE_API_KEY", "k-SECRET-999\n")
    assert redact("Illegal header value b'k-SECRET-999\\n'") == "Illegal header value b'***'"
    assert redact("sent 'k-SECRET-999' stripped") == "sent '***' stripped"


def test_log_records_are_redacted_whatever_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    logger = logging.getLogger("qraft.test.redact")
    with caplog.at_level(logging.INFO):
        logger.info("connecting to %s", "http://user:hunter22@host:8123")
        try:
            raise RuntimeError("cannot reach nats://svc:n4ts-pass@n1:4222")
        except RuntimeError:
            logger.exception("bus down")
    assert "hunter22" not in caplog.text and "n4ts-pass" not in caplog.text
    assert "http://user:***@host:8123" in caplog.text and "nats://svc:***@n1:4222" in caplog.text


def test_formatters_that_unpack_arguments_still_work() -> None:
    """uvicorn's access log unpacks the record's arguments and formats the status code with %d."""
    install_redaction()
    record = logging.getLogRecordFactory()(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/x?password=hunter22", "1.1", 200),
        None,
    )
    client, method, path, version, status = record.args  # type: ignore[misc]
    assert (path, status) == ("/x?password=***", 200)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /x?password=*** HTTP/1.1" 200'


def test_uncaught_exceptions_print_redacted_tracebacks() -> None:
    script = (
        "import threading\n"
        "from qraft_core.redact import install_redaction\n"
        "install_redaction()\n"
        "def fail():\n"
        "    raise ConnectionError('cannot reach nats://svc:n4ts-pass@n1:4222')\n"
        "thread = threading.Thread(target=fail)\n"
        "thread.start()\n"
        "thread.join()\n"
        "fail()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1 and "n4ts-pass" not in result.stderr
    assert result.stderr.count("ConnectionError: cannot reach nats://svc:***@n1:4222") == 2
    assert "Exception in thread Thread-1 (fail):" in result.stderr


def test_a_bad_store_dsn_is_reported_without_its_password() -> None:
    with pytest.raises(ValueError) as error:
        ClickHouseStore("mysql://root:hunter22@db")
    assert "hunter22" not in str(error.value) and "mysql://root:***@db" in str(error.value)


def test_a_server_store_gives_each_thread_its_own_client() -> None:
    made: list[object] = []

    def connect(dsn: str) -> object:
        made.append(object())
        return made[-1]

    clients = ServerClients("http://h:8123", connect)
    seen: dict[str, object] = {}

    def use(name: str) -> None:
        for _ in range(3):
            with clients.session() as client:
                seen.setdefault(name, client)
                assert seen[name] is client

    threads = [threading.Thread(target=use, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 4 and len({id(c) for c in seen.values()}) == 4
