"""The message bus: interface, fake, NATS JetStream and the embedded server."""

from qraft_core.bus.base import BusMessage, Consumer, Publisher, StreamSettings

__all__ = ["BusMessage", "Consumer", "Publisher", "StreamSettings"]
