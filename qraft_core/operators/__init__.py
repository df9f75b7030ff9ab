"""Preprocessing operators, found by name in `config/preprocessing.yaml`."""

from qraft_core.operators import aggregate, derive, join, normalize, text
from qraft_core.operators.base import (
    OPERATORS,
    Operator,
    OperatorContext,
    OperatorError,
    StatefulOperator,
    build_operator,
    register_operator,
)
from qraft_core.operators.pipeline import (
    PreprocessingConfig,
    SourcePipeline,
    failing_operator,
    load_preprocessing,
    run_pipeline,
)

# Imported for their registration side effect.
_BUILTIN = (aggregate, derive, join, normalize, text)

__all__ = [
    "OPERATORS",
    "Operator",
    "OperatorContext",
    "OperatorError",
    "PreprocessingConfig",
    "SourcePipeline",
    "StatefulOperator",
    "build_operator",
    "failing_operator",
    "load_preprocessing",
    "register_operator",
    "run_pipeline",
]
