"""`/metrics`: the pipeline's health for Prometheus (see qraft_core/monitoring.py).

Open like any Prometheus exporter, even when reads need a key: it carries counts and times only.
"""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from qraft_core.api.context import ApiContext
from qraft_core.monitoring import PipelineCollector


def metrics_router(ctx: ApiContext) -> APIRouter:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(ctx.store, ctx.runtime.config.partitions, ctx.runtime.data_dir / "replays"))
    router = APIRouter(tags=["monitoring"])

    # Prometheus' text format, not a part of the REST API's OpenAPI surface.
    @router.get("/metrics", response_class=Response, include_in_schema=False)
    def get_metrics() -> Response:
        """Windows behind, findings per window by type and replays by status, in Prometheus' text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
