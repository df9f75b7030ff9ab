"""Table specs for the features table."""

from qraft_core.store.schema import TableSpec

SPECS: list[TableSpec] = []
