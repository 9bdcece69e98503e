"""``edgeguard bench``: latency against leakage for every output filter.

    from edgeguard.bench import BenchSettings, ThroughSettings, run_bench
    settings = BenchSettings(eval_size=1000, attack_size=4000,
                             through=ThroughSettings(epochs=2, train_limit=10_000, cache_dir=".cache"))
    report = run_bench("classifier.onnx", "decoder.onnx", "/usr/share/datasets/fashion-mnist",
                       "none;softmax>round:2;argmax", settings)
    report.rows[0].to_dict(); report.write("bench-out")   # CSV, Markdown, JSON, plots, grids

Each filter is measured against the attacker ladder (rung 1: the server's decoder as
trained; rung 2: refitted on filtered outputs; rung 3: a classifier + decoder trained
through the filter, :mod:`edgeguard.bench.ladder`; rung 4: a hand-built code,
:mod:`edgeguard.bench.rung_codes`), and the worst case over the rungs is reported next to
the capacity bound; noise filters also get the repeated-queries
experiment (:mod:`edgeguard.bench.repeats`).

Vector and sequence models ((N, F), (N, T, F) inputs) get a
:class:`~edgeguard.bench.vector_report.VectorBenchReport` (:mod:`edgeguard.bench.vector_run`):
post-hoc attackers on every release, scored as the vet scores vectors (MSE gain over the
per-class mean in dB, R^2 per feature); the decoder is optional there::

    report = run_bench("tabular.onnx", None, "probe.csv", "none;softmax>round:2;argmax",
                       BenchSettings(eval_size=150, attack_size=400), label_column="diagnosis")

See :mod:`edgeguard.bench.run` for what is measured (a :class:`~edgeguard.bench.context.BenchContext`
shared by one module per rung), :mod:`edgeguard.bench.settings` for the knobs, :mod:`edgeguard.filters.spec` for the
filter-spec syntax and :mod:`edgeguard.bench.mapping` for how releases are fed to the
server's decoder. torch (optional) powers the adaptive attacker; matplotlib (the
``bench`` extra) the plot.
"""

from edgeguard.bench.ladder import TRAINER_GROUP, ThroughSettings
from edgeguard.bench.mapping import DecoderInputMap, one_hot
from edgeguard.bench.repeats import REPEAT_COUNTS, RepeatRow
from edgeguard.bench.report import (
    CSV_COLUMNS,
    RUNG_NAMES,
    TARGET_ACCURACY_DROP,
    TARGET_GAIN_DB,
    TARGET_RISK,
    BenchReport,
    BenchRow,
)
from edgeguard.bench.run import run_bench
from edgeguard.bench.settings import ATTACKERS, BenchSettings, CodeSettings
from edgeguard.bench.vector_attacks import VECTOR_ATTACKERS
from edgeguard.bench.vector_report import VectorBenchReport, VectorBenchRow
from edgeguard.filters.spec import FILTER_NAMES, FilterSpec, default_filter_specs, parse_filter_spec, parse_filter_specs

__all__ = [
    "run_bench",
    "BenchSettings",
    "CodeSettings",
    "ATTACKERS",
    "BenchReport",
    "BenchRow",
    "VectorBenchReport",
    "VectorBenchRow",
    "VECTOR_ATTACKERS",
    "CSV_COLUMNS",
    "TARGET_ACCURACY_DROP",
    "TARGET_GAIN_DB",
    "TARGET_RISK",
    "RUNG_NAMES",
    "ThroughSettings",
    "TRAINER_GROUP",
    "RepeatRow",
    "REPEAT_COUNTS",
    "FilterSpec",
    "FILTER_NAMES",
    "parse_filter_spec",
    "parse_filter_specs",
    "default_filter_specs",
    "DecoderInputMap",
    "one_hot",
]
