"""Vetting: tell honest from vicious classifiers before any output is shared.

``edgeguard.vet(model_path, probe_data, **knobs)`` (the same function as
``edgeguard.vetting.vet``) runs, in order:

1. a static audit of the ONNX file (:func:`static_audit`), before anything in it runs;
2. a black-box leakage audit (:func:`leakage_audit`): does a simple client-side decoder
   reconstruct probe images from the outputs better than the label alone allows?
3. the paper's fine-tune test (:func:`finetune_test`, needs torch);

and combines them into a :class:`VetReport` with verdict honest / vicious / inconclusive,
using the thresholds, weights and test settings in ``thresholds.json`` (fitted by
``benchmarks/detection.py``; there the fine-tune test got weight 0, see detection.md).
"""

from __future__ import annotations

from typing import Any

from edgeguard.vetting.report import EXIT_CODES, SEVERITIES, VERDICTS, Finding, TestResult, VetReport
from edgeguard.vetting.static import static_audit

__all__ = [
    "vet",
    "VetReport",
    "Finding",
    "TestResult",
    "static_audit",
    "leakage_audit",
    "finetune_test",
    "FinetuneSettings",
    "LeakageSettings",
    "EXIT_CODES",
    "SEVERITIES",
    "VERDICTS",
]


def vet(model_path: Any, probe_data: Any, **knobs: Any) -> VetReport:
    """Vet an ONNX classifier; see :func:`edgeguard.vetting.api.vet` for every argument."""
    from edgeguard.vetting.api import vet as _vet

    return _vet(model_path, probe_data, **knobs)


_LAZY = {
    "leakage_audit": "edgeguard.vetting.leakage",
    "LeakageSettings": "edgeguard.vetting.leakage",
    "finetune_test": "edgeguard.vetting.finetune",
    "FinetuneSettings": "edgeguard.vetting.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeguard.vetting' has no attribute {name!r}")
