"""Detection quality of the default detectors on the seeded labelled corpus, against a plain River loop.

The corpus (`qraft_core.demo.corpus`) and the measures (`qraft_core.demo.quality`)
are described there; both detector sets read the same bars in the same run.
Prints JSON lines {"bench", "value", "unit", "baseline", "ratio"} for the defaults' findings (their
signals merged into pattern events as the pipeline does), then the same five for their raw signals
(bench names prefixed `signals_`), then the findings' five on the operations scenarios
(`qraft_core.demo.scenarios`, seeds 1 to `--scenario-seeds`; prefixed `scenarios_`):

- window_standard_score: the benchmark window score (100 perfect, 0 no findings),
  baseline: the River loop at its own best threshold;
- precision_at_equal_recall: the defaults' precision, baseline: the loop's best
  precision at any threshold reaching the defaults' recall;
- false_alarms_per_10k_rows_nothing_planted, drift_recall_within_200_rows,
  false_findings_per_10k_rows_drift_only: the issue's goals, beside the loop's.

Usage: uv run python bench/bench_quality.py [--streams 48] [--bars 4000] [--seed 11] [--scenario-seeds 5] [--per-scenario]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qraft_core.demo.corpus import generate_corpus
from qraft_core.demo.quality import compare, detect, per_stream_kind
from qraft_core.demo.scenarios import generate_scenarios


def _line(bench: str, value: float, unit: str, baseline: float) -> str:
    ratio = round(value / baseline, 3) if baseline else None
    return json.dumps({"bench": bench, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio})


def _lines(prefix: str, ours: dict[str, float], result: dict[str, Any]) -> None:
    river = result["river"]
    print(_line(f"{prefix}window_standard_score", ours["window_standard_score"], "score",
                river["window_standard_score"]))
    print(_line(f"{prefix}precision_at_equal_recall", ours["precision"], "precision",
                result["river_precision_at_equal_recall"]))
    for name, unit in (("false_alarms_per_10k_rows_nothing_planted", "alarms/10k rows"),
                       ("drift_recall_within_200_rows", "recall"),
                       ("false_findings_per_10k_rows_drift_only", "findings/10k rows")):
        print(_line(f"{prefix}{name}", ours[name], unit, river[name]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=48)
    parser.add_argument("--bars", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--scenario-seeds", type=int, default=5, help="seeds 1..N of the operations scenarios")
    parser.add_argument("--per-scenario", action="store_true",
                        help="also each scenario's false findings and planted changes found, on stderr")
    args = parser.parse_args()
    result = compare(generate_corpus(args.streams, args.bars, args.seed))
    _lines("", result["defaults"], result)
    _lines("signals_", result["signals"], result)
    streams = generate_scenarios(range(1, args.scenario_seeds + 1))
    scenarios = compare(streams)
    _lines("scenarios_", scenarios["defaults"], scenarios)
    if args.per_scenario:
        findings, _ = detect(streams)
        for name, (false, bars, found, planted) in per_stream_kind(streams, findings).items():
            print(f"{name:22s} false findings per 10k rows {1e4 * false / bars:5.2f}   found {found}/{planted}",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
