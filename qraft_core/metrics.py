"""Prometheus metrics shared by the long-running processes (lander, adapters).

Every process serves the default registry on its own configured port.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

EVENTS_LANDED = Counter("qraft_events_landed", "Events inserted into raw_events", ["source"])
EVENTS_DEAD_LETTERED = Counter("qraft_events_dead_lettered", "Messages or events sent to dead_letters", ["source"])
LAND_BATCH_SECONDS = Histogram(
    "qraft_land_batch_seconds", "Time from fetch to acknowledgement of one landed batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge("qraft_consumer_lag_messages", "Messages in the stream not yet delivered to the lander")
STORE_RETRIES = Counter("qraft_store_retries", "Store calls retried after a transient error")

ADAPTER_EVENTS = Counter("qraft_adapter_events", "Events published by an adapter", ["source"])
ADAPTER_ERRORS = Counter("qraft_adapter_errors", "Errors met by an adapter", ["source", "kind"])
ADAPTER_RECONNECTS = Counter("qraft_adapter_reconnects", "Reconnects made by an adapter", ["source"])
ADAPTER_LAG_SECONDS = Gauge(
    "qraft_adapter_lag_seconds", "Ingest time minus event time of the latest event", ["source"]
)


def serve_metrics(port: int) -> int:
    """Serve /metrics on `port` (0 picks a free one); returns the port, or 0 if it is taken."""
    try:
        # Loopback unless a container or pod must be scraped from outside (QRAFT_METRICS_HOST=0.0.0.0).
        server, _thread = start_http_server(port, addr=os.environ.get("QRAFT_METRICS_HOST", "127.0.0.1"))
    except OSError as exc:
        # A metrics port clash must not stop ingestion.
        log.warning("metrics not served: port %s unavailable (%s)", port, exc)
        return 0
    return int(server.server_port)
