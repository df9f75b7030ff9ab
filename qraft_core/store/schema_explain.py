"""Table specs for explanation cards and annotations."""

from qraft_core.store.schema import TableSpec

SPECS: list[TableSpec] = []
