# The two commands a new user needs: `make demo` and `make test`. Each bootstraps
# uv (from PyPI) and the locked environment (uv.lock) before it runs.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: install demo test bench ui lint chaos browser-deps screenshots superset

install:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen

demo: install
	$(UV) run qraft demo

test: install browser-deps
	$(UV) run pytest

bench: install
	@for script in bench/bench_*.py; do $(UV) run python $$script || exit 1; done

ui: install
	$(UV) run qraft up

# Superset 6.1 from its own lock (dashboards/superset_env), the Qraft dashboards imported and
# pointed at the configured store; the admin password comes from QRAFT_SUPERSET_PASSWORD.
superset: install
	$(UV) run python -m qraft_core.superset

lint: install
	$(UV) run ruff check qraft_core qraft_dagster qraft_cli tests bench
	$(UV) run mypy

# The full fault drills (200,000 events; tests/chaos/): `make test` runs them reduced.
chaos: install
	QRAFT_CHAOS_EVENTS=200000 $(UV) run pytest tests/chaos -p no:cacheprovider -s --timeout 3600

# What the explorer's browser tests and screenshots need: Debian's Chromium (driven by the
# playwright package from uv.lock; Playwright's own browser downloads are never used) and a
# CJK font for the Chinese cards. The package index is refreshed only when an install fails.
BROWSER_FILES := /usr/bin/chromium /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
browser-deps:
	@missing=0; for f in $(BROWSER_FILES); do test -e $$f || missing=1; done; \
	if [ $$missing = 1 ]; then \
		apt-get install -y chromium fonts-wqy-microhei \
		|| { apt-get update && apt-get install -y chromium fonts-wqy-microhei; } \
		|| echo "browser-deps: could not install Chromium; the browser tests will be skipped"; \
	fi

# Screenshots of every explorer page over the store of `make demo`, into docs/screenshots/.
screenshots: install browser-deps
	$(UV) run python -m qraft_core.api.explorer.screenshots --out docs/screenshots
