"""`config/preprocessing.yaml`: the per-source operator chains, validated and built.

    preprocessing:
      bar_seconds: 10                # bar size of sources that do not state their own
      pipeline_by_source:
        - source: cpu
          bar_seconds: 300           # this source's bar size (optional)
          operators:
            - aggregate: {fields: [value]}   # method `stats`: value_mean, value_min, ...
        - source: hosts
          event_type: metric         # only events of this type (optional)
          stream_key: host           # stream = "hosts:<payload.host>" (optional)
          operators:
            - aggregate: {fields: [load], stats: [mean, max]}
            - normalize: {fields: [load_mean], window: 60}
        - source: news
          operators:
            - text_clean
            - keyword_extract: {topk: 20}

An operator is written as its name alone or as `name: {params}`. Unknown keys,
unknown operators and bad parameters are errors naming file, key and what was
expected. The chains read the events the clean step kept (schema, event times
and malformed payloads are checked there, for every source).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, field_validator, model_validator

from qraft_core.config import Strict, config_dir, parse_model, read_yaml
from qraft_core.operators.base import (
    BaseOperator,
    OperatorContext,
    OperatorError,
    TrailingOperator,
    build_operator,
)
from qraft_core.operators.stream_names import stream_names
from qraft_core.payload import payload_field
from qraft_core.streams import StreamId

# One day: the longest window a partition can have, so the longest bar.
MAX_BAR_SECONDS = 86_400


def _operator_step(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ValueError(f"parameters of {name!r} must be a mapping, got {type(params).__name__}")
        return str(name), dict(params)
    raise ValueError("expected an operator name or a mapping {name: {params}}")


class SourcePipeline(Strict):
    source: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    event_type: str | None = None
    # Payload field whose value splits the source into streams "<source>:<value>" (made a valid
    # filter value: see stream_names); unset, the source is one stream named after it.
    stream_key: str | None = None
    # This source's bar size; unset, the file-wide `bar_seconds`.
    bar_seconds: int | None = Field(default=None, ge=1, le=MAX_BAR_SECONDS)
    operators: list[Any] = Field(min_length=1)

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, value: list[Any]) -> list[Any]:
        for index, entry in enumerate(value):
            try:
                name, params = _operator_step(entry)
                build_operator(name, params)
            except ValueError as exc:
                raise ValueError(f"operators[{index}]: {exc}") from None
        return value

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [_operator_step(entry) for entry in self.operators]

    def build(self) -> list[BaseOperator[Any]]:
        """Fresh operator instances (stateful ones start without history)."""
        return [build_operator(name, params) for name, params in self.steps()]

    def aggregate_params(self) -> dict[str, Any]:
        """The parameters of the chain's `aggregate` step ({} without one)."""
        return next((params for name, params in self.steps() if name == "aggregate"), {})

    def joined_sources(self) -> list[str]:
        return [params["source"] for name, params in self.steps() if name == "join"]

    def stream_expr(self) -> pl.Expr:
        """The stream name of each clean event of this source."""
        if self.stream_key is None:
            return pl.lit(self.source)
        value = payload_field(self.stream_key).fill_null("")
        name = pl.concat_str(pl.lit(StreamId.key_prefix(self.source)), value)
        return name.map_batches(stream_names, return_dtype=pl.Utf8)

    def owns_stream(self, stream: pl.Expr) -> pl.Expr:
        if self.stream_key is None:
            return stream == self.source
        return stream.str.starts_with(StreamId.key_prefix(self.source))

    def owns_stream_name(self, stream: str) -> bool:
        if self.stream_key is None:
            return stream == self.source
        return stream.startswith(StreamId.key_prefix(self.source))


class PreprocessingConfig(Strict):
    bar_seconds: int = Field(default=10, ge=1, le=MAX_BAR_SECONDS)
    pipeline_by_source: list[SourcePipeline] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessingConfig:
        names = [p.source for p in self.pipeline_by_source]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"source(s) listed twice in pipeline_by_source: {', '.join(duplicated)}")
        by_name = {p.source: p for p in self.pipeline_by_source}
        for pipeline in self.pipeline_by_source:
            for other in pipeline.joined_sources():
                if other not in names:
                    raise ValueError(f"{pipeline.source}: join reads source {other!r}, which has no pipeline")
                if self.bar_seconds_of(by_name[other]) != self.bar_seconds_of(pipeline):
                    raise ValueError(
                        f"{pipeline.source}: join reads source {other!r}, whose bars have another size "
                        f"({self.bar_seconds_of(by_name[other])}s, not {self.bar_seconds_of(pipeline)}s)"
                    )
        self.ordered()
        return self

    def bar_seconds_of(self, pipeline: SourcePipeline) -> int:
        return pipeline.bar_seconds or self.bar_seconds

    def bar_seconds_for_stream(self, stream: str) -> int:
        """The bar size of a stream's source (the file-wide size for streams no pipeline owns).

        >>> config = PreprocessingConfig.model_validate({"pipeline_by_source": [
        ...     {"source": "cpu", "bar_seconds": 300, "operators": ["aggregate"]},
        ...     {"source": "fx", "stream_key": "pair", "operators": ["aggregate"]}]})
        >>> [config.bar_seconds_for_stream(s) for s in ("cpu", "fx:EURUSD", "other")]
        [300, 10, 10]
        """
        for pipeline in self.pipeline_by_source:
            if pipeline.owns_stream_name(stream):
                return self.bar_seconds_of(pipeline)
        return self.bar_seconds

    def ordered(self) -> list[SourcePipeline]:
        """Pipelines with every joined source before the pipelines joining it."""
        by_name = {p.source: p for p in self.pipeline_by_source}
        done: list[SourcePipeline] = []
        visiting: list[str] = []

        def visit(pipeline: SourcePipeline) -> None:
            if any(p.source == pipeline.source for p in done):
                return
            if pipeline.source in visiting:
                cycle = " → ".join([*visiting, pipeline.source])
                raise ValueError(f"joins form a cycle: {cycle}")
            visiting.append(pipeline.source)
            for other in pipeline.joined_sources():
                visit(by_name[other])
            visiting.pop()
            done.append(pipeline)

        for pipeline in self.pipeline_by_source:
            visit(pipeline)
        return done

    def lookback_seconds(self) -> int:
        """The longest stretch of time any stateful operator reads before a window."""
        trailing = [
            op.lookback_bars * self.bar_seconds_of(p)
            for p in self.pipeline_by_source
            for op in p.build()
            if isinstance(op, TrailingOperator)
        ]
        return max(trailing, default=0)


class PreprocessingFile(Strict):
    preprocessing: PreprocessingConfig


def load_preprocessing(directory: Path | str | None = None) -> PreprocessingConfig:
    """`config/preprocessing.yaml`, validated; raises ConfigError naming file, key and expectation."""
    path = config_dir(directory) / "preprocessing.yaml"
    return parse_model(PreprocessingFile, read_yaml(path), path).preprocessing


_OPERATOR_NOTE = "raised by operator "


def failing_operator(error: BaseException) -> str | None:
    """The name of the operator `run_pipeline` found raising `error`, or None (the chain's own check).

    >>> error = ValueError("x")
    >>> error.add_note(_OPERATOR_NOTE + "aggregate")
    >>> failing_operator(error), failing_operator(ValueError("y"))
    ('aggregate', None)
    """
    notes = getattr(error, "__notes__", [])
    return next((note.removeprefix(_OPERATOR_NOTE) for note in notes if note.startswith(_OPERATOR_NOTE)), None)


def run_pipeline(
    pipeline: SourcePipeline,
    operators: list[BaseOperator[Any]],
    events: pl.DataFrame,
    context: OperatorContext,
) -> pl.DataFrame:
    """Apply `operators` in order to the clean events of one source.

    The chain must turn events into bars (a frame with `stream` and `bar_time`).
    """
    frame = events.with_columns(pipeline.stream_expr().alias("stream"))
    for operator in operators:
        try:
            frame = operator.apply(frame, context)
        except Exception as exc:
            # Raised on as it is, naming the operator for whoever reports it (`failing_operator`).
            exc.add_note(f"{_OPERATOR_NOTE}{operator.name}")
            raise
    if "bar_time" not in frame.columns:
        raise OperatorError(
            f"the pipeline of {pipeline.source} ends without bars: add an aggregating operator "
            "(aggregate or keyword_extract)"
        )
    return frame
