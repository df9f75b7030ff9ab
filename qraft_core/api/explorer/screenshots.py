"""Screenshots of every explorer page, taken in headless Chromium.

    python -m qraft_core.api.explorer.screenshots [--out docs/screenshots] [--url URL]

Without --url it serves the API over the configured store (run `make demo`
first) on a free loopback port for the time it takes. Chromium is the system
one (`/usr/bin/chromium`, or $QRAFT_CHROMIUM), driven by Playwright; `make
screenshots` installs both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VIEWPORT = {"width": 1600, "height": 1000}
# What each page shows once it has loaded: a screenshot waits for it.
PAGES = [
    ("inbox", "#/", "#findings .finding-row"),
    ("finding", None, "#card .md"),
    ("streams", "#/streams", "#stream-chart svg.chart"),
    ("pipeline", "#/pipeline", "#step-findings"),
    ("evaluation", "#/evaluation", "#truth, .empty"),
]


def chromium_path() -> str | None:
    """The system Chromium Playwright drives (its own browser downloads are never used)."""
    for candidate in (os.environ.get("QRAFT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def launch_chromium(playwright: Any) -> Any:
    path = chromium_path()
    if path is None:
        raise RuntimeError("no Chromium found: install it with `apt-get install -y chromium` (make browser-deps)")
    return playwright.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the API did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _showcase_finding(page: Any, base_url: str) -> str:
    """A finding that shows the most: a cross-validated drift if there is one, else the first finding."""
    for query in ("type=concept_drift&limit=200", "limit=1"):
        items = page.request.get(f"{base_url}/explorer/api/findings?{query}").json()["items"]
        if items:
            return str(next((i for i in items if i["cross_validated"]), items[0])["pattern_id"])
    raise RuntimeError("the store holds no findings: run `make demo` first")


def take_screenshots(base_url: str, out_dir: Path) -> list[Path]:
    """One PNG per page."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        for name, route, ready in PAGES:
            if route is None:
                page.goto(f"{base_url}/#/finding/{_showcase_finding(page, base_url)}")
            else:
                page.goto(f"{base_url}/{route}")
            page.locator(ready).first.wait_for(state="attached", timeout=30_000)
            page.wait_for_load_state("networkidle")
            path = out_dir / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            written.append(path)
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="Folder for the PNGs.")
    parser.add_argument("--url", help="A running API (default: serve the configured store here).")
    args = parser.parse_args(argv)
    try:
        if args.url:
            written = take_screenshots(args.url.rstrip("/"), args.out)
        else:
            from qraft_core.api import create_app
            from qraft_core.runtime import Runtime

            runtime: Any = Runtime.load()  # RuntimeLike reads data_dir; Runtime derives it
            with serve(create_app(runtime)) as url:
                written = take_screenshots(url, args.out)
    except Exception as exc:  # a user-facing command: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
