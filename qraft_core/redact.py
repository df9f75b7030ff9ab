"""Secrets out of every message: API bodies, CLI errors and log lines go through `redact`.

Three kinds of secret reach messages: credentials inside URLs (a store DSN
`http://user:pass@host`, `nats://user:pass@host`, `nats://token@host`),
secret query parameters (`?password=...`), and the values of secret
environment variables (an LLM key, the API key, a store password), which can
appear anywhere, e.g. echoed back in an upstream error.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from typing import Any

MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s\"'<>]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<name>\b(?:password|passwd|pwd|token|access_token|api_key|apikey|secret|access_key|secret_key)=)"
    r"(?P<value>[^&\s\"'<>]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>\bBearer\s+)(?P<value>[^\s\"'<>]+)", re.IGNORECASE)
_SECRET_ENV_NAME = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIALS?)$", re.IGNORECASE
)
# Shorter values (a flag like "1") would mask ordinary words.
_MIN_SECRET_LEN = 6
# The shell's working folders end like a password variable (`DB_PWD`) but name a folder: masking them
# would hide the folder in every message naming a file under it.
_NOT_SECRETS = frozenset({"PWD", "OLDPWD"})


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    # With a colon the user name stays (it helps to read the message); a lone value is a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def secret_values() -> list[str]:
    """Values of environment variables whose names say they are secrets, longest first."""
    found = {
        value
        for name, value in os.environ.items()
        if _SECRET_ENV_NAME.search(name) and name.upper() not in _NOT_SECRETS and len(value) >= _MIN_SECRET_LEN
    }
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every credential it may carry masked.

    >>> redact("cannot open the store at http://qraft:s3cret@ch:8123/db?password=x1&db=a")
    'cannot open the store at http://qraft:***@ch:8123/db?password=***&db=a'
    >>> redact("nats://tok3n@nats:4222 and Bearer sk-abc")
    'nats://***@nats:4222 and Bearer ***'
    """
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _SECRET_PARAM.sub(lambda m: m["name"] + MASK, text)
    text = _BEARER.sub(lambda m: m["name"] + MASK, text)
    for value in secret_values():
        # Also as an error message quotes it: escaped (`b'k-SECRET\\n'` for a value read from a
        # secret file with its trailing newline).
        forms = {value, repr(value)[1:-1], repr(value.encode())[2:-1], value.strip()}
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= _MIN_SECRET_LEN:
                text = text.replace(form, MASK)
    return text


def _redacted_arg(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


class _RedactedRecords:
    """A log record factory that redacts the message, its arguments and the traceback as the record is made.

    Arguments stay arguments (formatters such as uvicorn's access log unpack them); numbers are kept
    for `%d`-style formats, anything else becomes its redacted text.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.factory(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {key: _redacted_arg(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_redacted_arg(value) for value in record.args)
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            )
        return record


def _redacted_traceback(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def _redacted_thread_traceback(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        name = args.thread.name if args.thread is not None else "?"
        sys.stderr.write(f"Exception in thread {name}:\n")
        _redacted_traceback(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)


def install_redaction() -> None:
    """Redact every log record this process makes (whichever logger or handler it goes to) and
    every traceback of an uncaught exception, in the main thread or any other."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactedRecords):
        logging.setLogRecordFactory(_RedactedRecords(current))
    sys.excepthook = _redacted_traceback
    threading.excepthook = _redacted_thread_traceback
