"""Vetting: tell honest from vicious classifiers before any output is shared.

``edgeguard.vet(model_path, probe_data, settings=None, **knobs)`` (the same function as
``edgeguard.vetting.vet``; knobs are :class:`VetSettings` field names) runs, in order:

1. a static audit of the ONNX file (:func:`static_audit`), before anything in it runs, with
   default-deny on the path to the output (:mod:`.output_path`);
2. a consistency test (:func:`consistency_test`): per-row outputs must not depend on the batch;
3. a precision check (:mod:`.precision`): float32 onnxruntime against a float64 re-evaluation;
4. a continuity test (:mod:`.continuity`): sub-quantum dither, 8-bit re-quantisation, 1% brightness;
5. the leakage audit (:mod:`.audit`, :mod:`.decoders`, :mod:`.twin`): several client-side
   decoders on clean and augmented (on and off the 8-bit grid) probe images, against an
   architecture-matched honest twin;
6. on request, the paper's fine-tune test (:func:`finetune_test`, needs torch);

and decides with the rule of :mod:`edgeguard.verdicts.rule` (three-way, on intervals; the
same rule SafeModel re-runs on a stored report), using the thresholds in
``edgeguard/verdicts/thresholds.json``.
"""

from __future__ import annotations

from typing import Any

from edgeguard.vetting.report import EXIT_CODES, SEVERITIES, VERDICTS, Finding, TestResult, VetReport
from edgeguard.vetting.static import static_audit

__all__ = [
    "vet",
    "VetSettings",
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
    "VetSettings": "edgeguard.vetting.settings",
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
