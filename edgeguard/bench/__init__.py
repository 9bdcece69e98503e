"""``edgeguard bench``: latency against leakage for every output filter.

    from edgeguard.bench import run_bench
    report = run_bench("classifier.onnx", "decoder.onnx", "/usr/share/datasets/fashion-mnist",
                       filters="none;softmax>round:2;argmax", eval_size=1000, attack_size=4000)
    report.rows[0].to_dict(); report.write("bench-out")   # CSV, Markdown, JSON, PNG plot, PNG grid

See :mod:`edgeguard.bench.run` for what is measured, :mod:`edgeguard.filters.spec` for the
filter-spec syntax and :mod:`edgeguard.bench.mapping` for how releases are fed to the
server's decoder. torch (optional) powers the adaptive attacker; matplotlib (the
``bench`` extra) the plot.
"""

from edgeguard.bench.mapping import DecoderInputMap, one_hot
from edgeguard.bench.report import CSV_COLUMNS, TARGET_ACCURACY_DROP, TARGET_RISK, BenchReport, BenchRow
from edgeguard.bench.run import run_bench
from edgeguard.filters.spec import FILTER_NAMES, FilterSpec, default_filter_specs, parse_filter_spec, parse_filter_specs

__all__ = [
    "run_bench",
    "BenchReport",
    "BenchRow",
    "CSV_COLUMNS",
    "TARGET_ACCURACY_DROP",
    "TARGET_RISK",
    "FilterSpec",
    "FILTER_NAMES",
    "parse_filter_spec",
    "parse_filter_specs",
    "default_filter_specs",
    "DecoderInputMap",
    "one_hot",
]
