"""SafeModel's onnxruntime side: providers, silent sessions, the per-call deadline, and error scrubbing.

onnxruntime's messages can quote values computed from the input, so its logging is set to
FATAL and an :class:`InferenceError` repeats only fixed vocabulary (the exception class,
the status name, the failing node's op type).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from edgeguard.errors import ConfigError, InferenceError
from edgeguard.filters.fusion import SHAPE_CHECK_NODE

__all__ = [
    "GPU_PROVIDERS",
    "DEFAULT_RUN_DEADLINE_S",
    "ORT_SILENT",
    "DeadlineRun",
    "quiet_run_options",
    "resolve_providers",
    "run_deadline",
    "scrub_inference_error",
]

#: Providers that ``providers="auto"`` prefers, in order, when onnxruntime offers them.
#: (TensorRT is left out: it builds engines at start-up; ask for it explicitly.)
GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)

#: onnxruntime log severity for SafeModel's session and runs: FATAL only (nothing on stderr when a node fails).
ORT_SILENT = 4
#: What an InferenceError may repeat from onnxruntime's message: the failing node's op type and the status name.
_ORT_NODE = re.compile(r"running (\w+) node")
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : ([A-Z_]+) :")
_ORT_STATUS_NAMES = frozenset(
    {
        "FAIL",
        "INVALID_ARGUMENT",
        "NO_SUCHFILE",
        "NO_MODEL",
        "ENGINE_ERROR",
        "RUNTIME_EXCEPTION",
        "INVALID_PROTOBUF",
        "MODEL_LOADED",
        "NOT_IMPLEMENTED",
        "INVALID_GRAPH",
        "EP_FAIL",
        "MODEL_LOAD_CANCELED",
        "MODEL_REQUIRES_COMPILATION",
        "NOT_FOUND",
    }
)


def quiet_run_options() -> Any:
    """An onnxruntime RunOptions that logs nothing below FATAL."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = ORT_SILENT
    return options


def resolve_providers(providers: str | Sequence[Any], available: Sequence[str]) -> list[Any]:
    if isinstance(providers, str) and providers == "auto":
        gpu = [name for name in GPU_PROVIDERS if name in available]
        return [gpu[0], "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    if not isinstance(providers, Iterable) or not providers:
        raise ConfigError(f"expected providers='auto' or a non-empty list of provider names, got {providers!r}")
    providers = list(providers)
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"expected execution providers that onnxruntime offers here ({', '.join(available)}), got {unknown}; "
            "pick from that list or use providers='auto' (for CUDA install the onnxruntime-gpu package)"
        )
    return providers


#: Per-call deadline used when allow_dynamic_ops let control flow or run-time sizes through.
DEFAULT_RUN_DEADLINE_S = 10.0


def run_deadline(value: float | None, dynamic: bool) -> float | None:
    if value is None:
        return DEFAULT_RUN_DEADLINE_S if dynamic else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ConfigError(f"expected run_deadline_s to be a positive number of seconds or None, got {value!r}")
    return float(value)


class DeadlineRun:
    """``run(outputs, feeds, options)`` that onnxruntime abandons after ``seconds`` (RunOptions.terminate)."""

    def __init__(self, run: Any, seconds: float, run_options: Any) -> None:
        self._run, self._seconds, self._run_options = run, seconds, run_options

    def __call__(self, output_names: Any, feeds: Any, options: Any = None) -> Any:
        options = options if options is not None else self._run_options()
        timer = threading.Timer(self._seconds, setattr, (options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return self._run(output_names, feeds, options)
        except Exception as error:
            if options.terminate:
                raise InferenceError(
                    f"expected the model to finish within the {self._seconds:g} s deadline, got it stopped; "
                    "nothing was released (raise run_deadline_s only for a provider you trust)"
                ) from None
            raise error
        finally:
            timer.cancel()


def scrub_inference_error(error: Exception, rows: int, num_classes: int, op_types: frozenset[str]) -> InferenceError:
    """An InferenceError that quotes nothing onnxruntime wrote (its messages can hold values).

    Only fixed vocabulary passes: the exception class, onnxruntime's status name, and the
    failing node's op type when it is one of this graph's op types.
    """
    if isinstance(error, InferenceError):  # ours (the run deadline): already free of values
        return error
    text = str(error)
    if SHAPE_CHECK_NODE in text:
        return InferenceError(
            f"expected model outputs of shape ({rows}, {num_classes}) and a float dtype, got another "
            "shape (they do not reshape to K columns); the file's metadata does not match its graph, nothing "
            "was released"
        )
    node = _ORT_NODE.search(text)
    op_type = node.group(1) if node and node.group(1) in op_types else None
    status = _ORT_STATUS.search(text)
    code = status.group(1) if status and status.group(1) in _ORT_STATUS_NAMES else None
    kind = type(error).__name__
    kind = kind if kind.isidentifier() and len(kind) <= 40 else "an onnxruntime error"
    return InferenceError(
        f"expected onnxruntime to run the model, got {kind}"
        + (f" ({code})" if code else "")
        + (f" in a {op_type} node" if op_type else "")
        + "; nothing was released. onnxruntime's message is withheld (it can quote values computed from "
        "the input): run the model with onnxruntime on synthetic inputs to see it"
    )
