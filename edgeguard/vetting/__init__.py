"""Vetting: tell honest from vicious classifiers before any output is shared.

``edgeguard.vet(model_path, probe_data, **knobs)`` (the same function as
``edgeguard.vetting.vet``) runs, in order:

1. a static audit of the ONNX file (:func:`static_audit`), before anything in it runs;
2. a consistency test (:func:`consistency_test`): per-row outputs must not depend on the
   batch (batch 1 vs batched, shuffled, repeated rows);
3. a black-box leakage audit (:func:`leakage_audit`): does a simple client-side decoder
   reconstruct (augmented) probe images from the outputs better than the label alone
   allows, and than an honest model of the same architecture (reference models)?
4. on request, the paper's fine-tune test (:func:`finetune_test`, needs torch);

and combines them into a :class:`VetReport` with verdict honest / vicious / inconclusive
(:func:`edgeguard.vetting.verdict.decide`), using the thresholds in ``thresholds.json``
(fitted by ``benchmarks/detection.py``).
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
    "consistency_test",
    "FinetuneSettings",
    "LeakageSettings",
    "LeakageResult",
    "ConsistencyResult",
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
    "LeakageResult": "edgeguard.vetting.leakage",
    "consistency_test": "edgeguard.vetting.consistency",
    "ConsistencyResult": "edgeguard.vetting.consistency",
    "finetune_test": "edgeguard.vetting.finetune",
    "FinetuneSettings": "edgeguard.vetting.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeguard.vetting' has no attribute {name!r}")
