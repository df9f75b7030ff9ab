"""Secrets out of every message: API bodies, CLI errors and log lines go through `redact`.

Three kinds of secret reach messages: credentials inside URLs (a store DSN
`http://user:pass@host`, `nats://user:pass@host`, `nats://token@host`),
secret query parameters (`?password=...`), and the values of secret
environment variables (an LLM key, the API key, a store password), which can
appear anywhere, e.g. echoed back in an upstream error. A live source adds its
credentials' values (`add_secret_values`), whatever their variables are named. A
secret value is masked in every form a message may quote it: as it is, escaped
(`repr`), and URL-encoded (`%2B` or `%2b`, a space as `+`), as a URL echoed by a
server or logged by an HTTP client shows it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

MASK = "***"
# User information ends at the last `@` before the host. A password may hold `/` (base64) or `@`;
# a query (`?mail=a@b`) or the next URL in a list (`://`) is not user information. Without a colon,
# a token never holds `/`, so an `@` in a path (`/users/@alice`) is left alone; nor is a port followed
# by a path (`host:8800/users/@alice`) a password. The scheme is a whole run of scheme characters
# (one start per run, not one per character, keeps the scan linear on `a-a-a-...` runs).
_URL_USERINFO = re.compile(
    r"(?P<scheme>(?<![A-Za-z0-9+.\-])[A-Za-z0-9+.\-]+://)"
    r"(?P<userinfo>[^/:@\s\"'<>]*:(?!\d{1,5}/)(?:(?!://)[^?#\s\"'<>])+|[^/@\s\"'<>]+)@"
)
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
# Values added by the sources that hold them (their variables may have any name).
_added_secrets: frozenset[str] = frozenset()


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
    pattern = secrets_pattern(tuple(secret_values()) + tuple(sorted(_added_secrets)))
    return text if pattern is None else pattern.sub(MASK, text)


def add_secret_values(values: Iterable[str]) -> None:
    """Mask `values` in every message from now on, as the values of secret environment variables are."""
    global _added_secrets
    # A new set replaces the old one: threads reading it never see it half updated.
    _added_secrets = _added_secrets | {value for value in values if len(value) >= _MIN_SECRET_LEN}


def _encoded(char: str) -> str:
    """A pattern for `char` as it is or percent-encoded in either case (a space also as `+`)."""
    escapes = "".join(
        "%" + "".join(f"[{digit.lower()}{digit}]" if digit.isalpha() else digit for digit in f"{byte:02X}")
        for byte in char.encode("utf-8", "surrogatepass")
    )
    plus = r"|\+" if char == " " else ""
    return f"(?:{re.escape(char)}|{escapes}{plus})"


@lru_cache(maxsize=32)
def secrets_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern matching each of `values` as a message may quote it, the longest form first; None
    when no value is long enough to be masked without masking ordinary words.

    Forms: the value and its surrounding-whitespace-less self (a secret file's trailing newline),
    URL-encoded in any way (`quote`, `quote_plus`, lower- or upper-case escapes), and escaped as
    `'...'` or `b'...'` quote it (a backslash as two, a newline as `\\n`).

    >>> pattern = secrets_pattern(("k+y/s3cret", "x"))
    >>> pattern.sub("***", "a k+y/s3cret b k%2By%2fs3cret c k%2by/s3cret d x")
    'a *** b *** c *** d x'
    >>> secrets_pattern(("short",)) is None
    True
    """
    forms: dict[str, str] = {}  # pattern -> the text it was made from, to order by length
    for value in values:
        for form in {value, value.strip()}:
            if len(form) >= _MIN_SECRET_LEN:
                forms["".join(map(_encoded, form))] = form
        for escaped in {repr(value)[1:-1], repr(value.encode("utf-8", "surrogatepass"))[2:-1]} - {value}:
            if len(escaped) >= _MIN_SECRET_LEN:
                forms[re.escape(escaped)] = escaped
    if not forms:
        return None
    return re.compile("|".join(sorted(forms, key=lambda pattern: len(forms[pattern]), reverse=True)))


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
