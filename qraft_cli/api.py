"""`qraft api`: serve the REST and Explain API."""

from __future__ import annotations

import click

from qraft_cli import main, services


@main.command("api")
@click.option("--host", default=None, help="Interface to listen on (default: api.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: api.port).")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the API (OpenAPI docs at /docs); writes need the key in the api.api_key_env variable."""
    import uvicorn

    from qraft_core.api import create_app
    from qraft_core.api.server import SERVER_SETTINGS

    found = services(ctx)
    rt = found.runtime
    # A long-running reader keeps the embedded store open between requests; it hands the
    # store to any other process that asks (see qraft_core/store/sessions.py).
    rt.store.keep_open_s = rt.config.api.store_keep_open_s
    app = create_app(rt, found.replay_launcher)
    uvicorn.run(app, host=host or rt.config.api.host, port=port or rt.config.api.port, **SERVER_SETTINGS)
