"""Domain plugins: modules that register operators, aggregate methods, cleaning rules,
metric sets, context summaries and card vocabulary through the generic registries.

A plugin is an importable module whose import performs its registrations. The
built-in ones are always loaded (the demo relies on the markets plugin); others come
from the `qraft.plugins` entry-point group of installed packages or from the
`plugins:` list of `qraft.yaml`. Registries call `load_plugins()` before a
lookup, so a plugin is never missing because nothing happened to import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

# Qraft's own registrations load the same way: the adapter types (and their check of sources),
# the store's tables with a retention, and the markets plugin.
BUILTIN_PLUGINS = ("qraft_core.adapters.registry", "qraft_core.store.cluster", "qraft_core.plugins.markets")
ENTRY_POINT_GROUP = "qraft.plugins"
_loaded: set[str] = set()


class PluginError(ImportError):
    """A configured plugin cannot be imported, or failed while registering."""


def load_plugins(names: Iterable[str] = ()) -> list[str]:
    """Import the built-in, installed and named plugins (each once); returns those loaded so far."""
    wanted = [*BUILTIN_PLUGINS, *names]
    if not _loaded:
        wanted += [entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)]
    for name in wanted:
        if name in _loaded:
            continue
        # Marked first: a plugin's own registrations look plugins up again while it imports.
        _loaded.add(name)
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _loaded.discard(name)
            raise PluginError(f"plugin {name!r} cannot be imported: {exc}") from exc
        except KeyboardInterrupt:
            _loaded.discard(name)
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin's own code may raise anything, sys.exit() too
            _loaded.discard(name)
            raise PluginError(f"plugin {name!r} failed while loading: {type(exc).__name__}: {exc}") from exc
    return sorted(_loaded)
