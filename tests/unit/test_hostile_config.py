"""Every configuration file with a wrong type, an unknown key, a missing required key, a list where a
mapping belongs or a key written twice: one ConfigError naming the file, the key and what was expected."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qraft_core.config import ConfigError
from qraft_core.validation import validate_all

REPO = Path(__file__).resolve().parents[2]
Edit = Callable[[dict[str, Any]], Any]


def first(section: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> Any:
        return {**data, section: value}
    return edit


def in_first_item(section: str, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> Any:
        items = [dict(item) for item in data[section]]
        items[0][key] = value
        return {**data, section: items}
    return edit


def without(section: str, key: str) -> Edit:
    def edit(data: dict[str, Any]) -> Any:
        if isinstance(data[section], list):
            items = [dict(item) for item in data[section]]
            del items[0][key]
            return {**data, section: items}
        return {**data, section: {k: v for k, v in data[section].items() if k != key}}
    return edit


CASES: list[tuple[str, Edit, str]] = [
    ("qraft.yaml", first("lander", {"batch_size": "many"}),
     "lander.batch_size: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ("qraft.yaml", first("nats", ["url"]), "nats: expected a mapping of keys, got a list"),
    ("qraft.yaml", first("lander", {"batch_sise": 5}), "lander.batch_sise: an unknown key (check the spelling) (got 5)"),
    ("qraft.yaml", first("data_dir", {"a": 1}), "data_dir: expected a path (text), got a mapping"),
    ("sources.yaml", first("sources", {"name": "x"}), "sources: expected a list, got a mapping"),
    ("sources.yaml", in_first_item("sources", "enabled", "sometimes"),
     "sources[0].enabled: Input should be a valid boolean, unable to interpret input (got 'sometimes')"),
    ("sources.yaml", in_first_item("sources", "options", ["a"]), "sources[0].options: expected a mapping of keys, got a list"),
    ("sources.yaml", in_first_item("sources", "colour", "red"), "sources[0].colour: an unknown key (check the spelling) (got 'red')"),
    ("sources.yaml", without("sources", "type"), "sources[0].type: Field required"),
    ("detectors.yaml", first("detectors", {"name": "x"}), "detectors: expected a list, got a mapping"),
    ("detectors.yaml", in_first_item("detectors", "features", 7), "detectors[0].features: expected a list (got 7)"),
    ("detectors.yaml", in_first_item("detectors", "colour", 1), "detectors[0].colour: an unknown key (check the spelling) (got 1)"),
    ("detectors.yaml", without("detectors", "name"), "detectors[0].name: Field required"),
    ("preprocessing.yaml", first("preprocessing", [1, 2]), "preprocessing: expected a mapping of keys, got a list"),
    ("preprocessing.yaml", first("preprocessing", None), "preprocessing: expected a mapping of keys (got None)"),
    ("cards.yaml", first("languages", "en"), "languages: expected a mapping of keys (got 'en')"),
    ("cards.yaml", lambda data: {}, "languages: Field required"),
]


@pytest.mark.parametrize(("name", "edit", "expected"), CASES, ids=[f"{c[0]}-{c[2][:40]}" for c in CASES])
def test_a_wrong_value_is_named_with_file_key_and_expectation(tmp_path: Path, name: str, edit: Edit,
                                                              expected: str) -> None:
    directory = tmp_path / "config"
    shutil.copytree(REPO / "config", directory)
    path = directory / name
    path.write_text(yaml.safe_dump(edit(yaml.safe_load(path.read_text()))))
    with pytest.raises(ConfigError) as caught:
        validate_all(directory)
    assert str(caught.value).split("\n")[0] == f"{path}: {expected}"


@pytest.mark.parametrize("name", ["qraft.yaml", "sources.yaml", "detectors.yaml", "preprocessing.yaml", "cards.yaml"])
def test_a_key_written_twice_is_an_error_not_a_silent_override(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "config"
    shutil.copytree(REPO / "config", directory)
    path = directory / name
    text = path.read_text()
    key = next(line.split(":")[0] for line in text.splitlines() if line[:1].isalpha())
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith(key + ":"))) + 1
    path.write_text(text + f"\n{key}: {{}}\n")
    with pytest.raises(ConfigError) as caught:
        validate_all(directory)
    last = len(path.read_text().splitlines())
    assert str(caught.value) == (f"{path}: line {last}, column 1: not valid YAML: found key '{key}' twice "
                                 f"(first on line {line}) (while constructing a mapping at line {_first_content_line(text)}, column 1)")


def _first_content_line(text: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.startswith("#"))


def test_a_key_merged_from_an_anchor_may_still_be_overridden(tmp_path: Path) -> None:
    directory = tmp_path / "config"
    shutil.copytree(REPO / "config", directory)
    path = directory / "qraft.yaml"
    path.write_text(path.read_text() + "\nllm:\n  <<: {enabled: false, url: ''}\n"
                    "  url: http://x\n")
    validate_all(directory)
