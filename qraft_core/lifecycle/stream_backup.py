"""The bus stream in a backup: every message with its subject, headers (`Nats-Msg-Id`) and data,
in sequence order, as gzip-compressed JSON lines (`nats/messages.jsonl.gz`), next to the stream's
configuration (`nats/stream.json`). A restore re-creates the stream and re-publishes every message
with its id, so `qraft bus reset` then lands the same events again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from qraft_core.bus.base import StoredMessage
from qraft_core.bus.nats_bus import read_stream, write_stream
from qraft_core.lifecycle.location import Location, LocationError

FOLDER = "nats"
MESSAGES = "messages.jsonl.gz"
CONFIG = "stream.json"


class StreamDigest:
    """Count and running SHA-256 of messages in order: equal digests mean the same messages."""

    def __init__(self) -> None:
        self.messages = 0
        self._hash = hashlib.sha256()

    def add(self, message: StoredMessage) -> None:
        self.messages += 1
        for part in (message.subject.encode(), json.dumps(message.headers, sort_keys=True).encode(), message.data):
            self._hash.update(len(part).to_bytes(8, "big") + part)

    def summary(self, stream: str) -> dict[str, Any]:
        return {"name": stream, "messages": self.messages, "digest": self._hash.hexdigest()}


def backup_stream(url: str, stream: str, target: Location) -> dict[str, Any] | None:
    """Write `stream` into `target`; returns its name, message count and digest (None: no stream)."""
    folder = target.child(FOLDER)
    folder.filesystem.create_dir(folder.path, recursive=True)
    digest = StreamDigest()
    with folder.filesystem.open_output_stream(folder.child(MESSAGES).path, compression=None) as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb") as out:
        def write(message: StoredMessage) -> None:
            digest.add(message)
            out.write(json.dumps({"subject": message.subject, "headers": message.headers,
                                  "data": base64.b64encode(message.data).decode()}).encode() + b"\n")

        config = asyncio.run(read_stream(url, stream, write))
    if config is None:
        folder.filesystem.delete_dir(folder.path)
        return None
    folder.write_bytes(CONFIG, json.dumps(config, indent=2, sort_keys=True).encode())
    return digest.summary(stream)


def _read_messages(folder: Location) -> Iterator[StoredMessage]:
    """The messages of a backup; a damaged line is named, never skipped."""
    with folder.filesystem.open_input_stream(folder.child(MESSAGES).path, compression=None) as raw, \
            gzip.GzipFile(fileobj=raw, mode="rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                yield StoredMessage(str(record["subject"]), {str(k): str(v) for k, v in record["headers"].items()},
                                    base64.b64decode(record["data"], validate=True))
            except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
                raise LocationError(f"{folder.child(MESSAGES).url}: line {number} is not a stored message "
                                    f"({type(exc).__name__}: {exc})") from None


def restore_stream(url: str, source: Location, expected: dict[str, Any]) -> dict[str, Any]:
    """Re-create the backed-up stream and its messages, then read it back and compare the digest."""
    folder = source.child(FOLDER)
    try:
        config = json.loads(folder.read_bytes(CONFIG))
        asyncio.run(write_stream(url, config, _read_messages(folder)))
    except LocationError:
        raise
    except (OSError, EOFError, ValueError, TypeError) as exc:  # a damaged file or configuration
        raise LocationError(f"{folder.url}: the stream backup cannot be read ({exc!r})") from exc
    digest = StreamDigest()
    asyncio.run(read_stream(url, expected["name"], digest.add))
    restored = digest.summary(expected["name"])
    if restored != expected:
        raise LocationError(f"the restored stream {expected['name']} differs from the backup: "
                            f"{restored['messages']} messages, {expected['messages']} backed up "
                            f"(a repeated Nats-Msg-Id within the duplicate window is stored once)"
                            if restored["messages"] != expected["messages"] else
                            f"the restored stream {expected['name']} has the backup's {expected['messages']} "
                            "messages but not their contents (digest differs)")
    return restored
