# The two commands a new user needs: `make demo` and `make test`. Each bootstraps
# uv (from PyPI) and the locked environment (uv.lock) before it runs.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: install demo test bench ui lint chaos

install:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen

demo: install
	$(UV) run qraft demo

test: install
	$(UV) run pytest

bench: install
	@for script in bench/*.py; do $(UV) run python $$script || exit 1; done

ui: install
	$(UV) run qraft up

lint: install
	$(UV) run ruff check qraft_core qraft_dagster tests bench
	$(UV) run mypy

# The full fault drills (200,000 events; tests/chaos/): `make test` runs them reduced.
chaos: install
	QRAFT_CHAOS_EVENTS=200000 $(UV) run pytest tests/chaos -p no:cacheprovider -s --timeout 3600
