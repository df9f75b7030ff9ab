"""Stream names: a source alone (`news`), or a source split by a payload key (`binance_spot:BTCUSDT`).

>>> StreamId.parse("binance_spot:BTCUSDT"), StreamId.parse("news")
(StreamId(source='binance_spot', key='BTCUSDT'), StreamId(source='news', key=''))
>>> str(StreamId("hosts", "a")), str(StreamId("news"))
('hosts:a', 'news')
"""

from __future__ import annotations

from dataclasses import dataclass

# Source names cannot hold it (sources.yaml: letters, digits, `_` and `-`), so the first one splits.
SEPARATOR = ":"


@dataclass(frozen=True)
class StreamId:
    source: str
    # The value of the source's `stream_key` payload field; empty for an unsplit source.
    key: str = ""

    @classmethod
    def parse(cls, name: str) -> StreamId:
        source, _, key = name.partition(SEPARATOR)
        return cls(source, key)

    @staticmethod
    def key_prefix(source: str) -> str:
        """What the names of a split source's streams start with."""
        return source + SEPARATOR

    def __str__(self) -> str:
        return self.key_prefix(self.source) + self.key if self.key else self.source
