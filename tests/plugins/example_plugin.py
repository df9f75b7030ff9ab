"""A small domain plugin, as a user would write one: room temperature sensors.

Importing it registers one of each kind through Qraft's registries: a source
type, a parser, an operator, a detector, a metric set and card vocabulary.
It is loaded through the `plugins:` list of qraft.yaml (see test_example_plugin.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict

from qraft_core.adapters.base import AdapterStats, RecordAdapter, register_adapter
from qraft_core.adapters.parsers import (
    GenericOptions,
    ParsedRecord,
    ParseError,
    RecordParser,
    register_parser,
)
from qraft_core.bus.base import Publisher
from qraft_core.detectors.anomaly import ANOMALY_DEFAULTS, AnomalyDetector
from qraft_core.detectors.base import register_detector
from qraft_core.events import StandardEvent
from qraft_core.explain.templates import register_vocabulary
from qraft_core.operators.base import (
    BaseOperator,
    OperatorContext,
    OperatorParams,
    register_operator,
)
from qraft_core.patterns.metrics import Metrics, register_metric_set


class ScriptedOptions(BaseModel):
    """The readings a `scripted` source replays, one every `step_s` seconds from `start`."""

    model_config = ConfigDict(extra="forbid")
    readings: list[float]
    start: datetime
    step_s: int = 60


@register_adapter
class ScriptedAdapter(RecordAdapter):
    """Source type `scripted`: publishes its configured readings as records `{seq, at, celsius}`."""

    type_name: ClassVar[str] = "scripted"
    options_model: ClassVar[type[BaseModel]] = ScriptedOptions

    async def run(self, publisher: Publisher, stop: asyncio.Event | None = None) -> AdapterStats:
        options: ScriptedOptions = self.options  # type: ignore[assignment]
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        for seq, celsius in enumerate(options.readings):
            at = options.start + timedelta(seconds=seq * options.step_s)
            record = {"seq": seq, "at": at.timestamp(), "celsius": celsius}
            self.judge(record, json.dumps(record).encode(), batch, failures)
        await self.publish(publisher, batch, failures)
        return self.stats


@register_parser("reading")
def reading_parser(options: GenericOptions, source: str) -> RecordParser:
    """Parser `reading`: a sensor record `{seq, at (epoch seconds), celsius}`."""

    def parse(record: Any, raw_checksum: str) -> ParsedRecord:
        if not isinstance(record.get("at"), float | int):
            raise ParseError("reading has no epoch time 'at'")
        at = datetime.fromtimestamp(record["at"], UTC)
        return ParsedRecord(f"{source}:{record['seq']}", "reading", at, {"celsius": record["celsius"]})

    return parse


class SwingParams(OperatorParams):
    field: str


@register_operator
class Swing(BaseOperator[SwingParams]):
    """Operator `swing`: a bar's range of a field (`<field>_max - <field>_min`) as `<field>_swing`."""

    name: ClassVar[str] = "swing"
    params_model: ClassVar[type[OperatorParams]] = SwingParams

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        field = self.options.field
        return frame.with_columns((pl.col(f"{field}_max") - pl.col(f"{field}_min")).alias(f"{field}_swing"))


@register_detector("FarFromMean")
class FarFromMean(AnomalyDetector):
    """Detector `qraft/FarFromMean`: a bar whose feature lies many running sds from its running mean."""

    engine: ClassVar[str] = "qraft"
    defaults: ClassVar[dict[str, Any]] = dict(ANOMALY_DEFAULTS)

    @property
    def algorithm(self) -> str:
        return "qraft.FarFromMean"

    @property
    def version(self) -> str:
        return "1"

    def _new_model(self) -> Any:
        return {}

    def _score_and_learn(self, values: dict[str, float], unit: dict[str, float]) -> tuple[float, None]:
        # `unit` is 0.5 + 0.5 * tanh(z / squash_sd): the distance from 0.5, doubled, grows with |z|.
        return max(abs(2 * u - 1) for u in unit.values()), None


@register_metric_set("sensors")
def sensor_metrics(columns: Any) -> Metrics:
    """Metric `temperature`: the bar mean of `celsius`, changed in degrees."""
    return {"temperature": ("celsius_mean", "delta")} if "celsius_mean" in columns else {}


register_vocabulary({"en": {"temperature": "room temperature"}, "zh": {"temperature": "室温"}})
