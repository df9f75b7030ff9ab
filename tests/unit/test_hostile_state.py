"""A state file that is JSON but not the state of its source stops that source with a ConfigError
naming the file (the supervisor retries it without a traceback), never a TypeError deep inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.config import ConfigError, SourceConfig

DATABASE = SourceConfig(name="d", type="database", endpoint="sqlite:///x.db", options={"table": "t"})
WATCHER = SourceConfig(name="w", type="watcher", endpoint="/tmp")


@pytest.mark.parametrize(("source", "file", "content", "problem"), [
    (DATABASE, "d.cursor.json", "[1, 2]", "holds list, not an object"),
    (DATABASE, "d.cursor.json", '{"cursor": "abc"}', "TypeError: string indices must be integers, not 'str'"),
    (DATABASE, "d.cursor.json", '{"cursor": [{"kind": "datetime", "value": "soon"}]}',
     "ValueError: Invalid isoformat string: 'soon'"),
    (DATABASE, "d.cursor.json", '{"cursor": null, "null_rows": "many"}',
     "ValueError: invalid literal for int() with base 10: 'many'"),
    (WATCHER, "w.watch.json", '{"files": [1]}',
     "'files' is not an object of file positions (header, inode, offset, rows, size)"),
    (WATCHER, "w.watch.json", '{"files": {"/tmp/a.jsonl": {"offset": 3}}}',
     "'files' is not an object of file positions (header, inode, offset, rows, size)"),
])
def test_a_state_file_of_the_wrong_shape_is_named(tmp_path: Path, source: SourceConfig, file: str,
                                                  content: str, problem: str) -> None:
    (tmp_path / file).write_text(content)
    with pytest.raises(ConfigError) as caught:
        build_adapter(source, tmp_path)
    assert str(caught.value) == (f"{tmp_path / file}: state file does not hold this source's state ({problem}); "
                                 "move it away to start over")
