"""Hostile configuration files thrown at `config validate`: a ConfigError or a pass, never a traceback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from qraft_core.config import ConfigError
from qraft_core.validation import validate_all
from tests.unit.fuzz_strategies import SLOW_FUZZ, garbage, values

REPO = Path(__file__).resolve().parents[2]
NAMES = ("qraft.yaml", "sources.yaml", "detectors.yaml", "preprocessing.yaml", "cards.yaml")


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A bundled file with random bytes changed, cut short, replaced by YAML of hostile values, or garbage."""
    name = draw(st.sampled_from(NAMES))
    original = (REPO / "config" / name).read_bytes()
    kind = draw(st.sampled_from(["flip", "cut", "yaml", "garbage", "alias"]))
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            data[draw(st.integers(min_value=0, max_value=len(data) - 1))] = draw(st.integers(0, 255))
        return name, bytes(data)
    if kind == "cut":
        return name, original[: draw(st.integers(min_value=0, max_value=len(original)))]
    if kind == "yaml":
        document = draw(st.dictionaries(st.text(max_size=8), values, max_size=4))
        try:
            return name, yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
        except (yaml.YAMLError, ValueError):  # text YAML cannot write, an integer too long for str()
            return name, b"k: " + b"9" * 5000 + b"\n"
    if kind == "alias":
        width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 9))
        lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
        return name, "\n".join(lines).encode()
    return name, draw(garbage)


@SLOW_FUZZ
@given(damage=damaged())
def test_config_validate_raises_only_config_errors_naming_the_file(damage):
    name, content = damage
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "config"
        shutil.copytree(REPO / "config", directory)
        (directory / name).write_bytes(content)
        try:
            validate_all(directory)
        except ConfigError as exc:
            assert str(exc).startswith(str(directory))
