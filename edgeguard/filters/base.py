"""The output-filter protocol: one base class, the domain it reasons about, and the pipeline.

A filter maps a batch of model outputs ``(N, K)`` to the batch that is released. It
declares what it ``accepts`` ("logits", "probabilities" or "any"), what it ``produces``,
and an upper bound on the information one released row can carry (its *capacity*).
:class:`FilterPipeline` composes filters in order, type-checks the chain against the
model's declared output kind, and fails closed: if any stage raises, nothing is
released and the error carries no output values.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from edgeguard.errors import FilterError, PrivacyBudgetExceededError

__all__ = [
    "OutputDomain",
    "OutputFilter",
    "FilterPipeline",
    "pipeline_capacity_bits",
    "sentinel_capacity_bits",
    "secure_rng",
    "make_rng",
    "row_digests",
    "RESEED_AFTER_DRAWS",
    "KINDS",
    "SUM_TOLERANCE",
]

#: What a stage's values are. "scores" are real values that are neither logits nor
#: probabilities (e.g. noisy probabilities that were not renormalised); "labels" are
#: class decisions (an index per row, or one-hot / 0-1 rows).
KINDS = ("logits", "probabilities", "scores", "labels")

#: Row sums of declared probabilities must lie within this distance of 1 (checked at
#: run time by SafeModel); capacity bounds include this slack.
SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OutputDomain:
    """What is known about the values entering a filter; used for type checks and capacity.

    ``row_sum`` is an interval for every row's sum (None = unknown), ``low``/``high``
    bound every entry, ``decimals`` says entries are integer multiples of
    ``10**-decimals``, ``terminal`` says the rows were reduced to one index each.
    """

    kind: str = "logits"
    task_type: str = "multiclass"
    row_sum: tuple[float, float] | None = None
    low: float = -math.inf
    high: float = math.inf
    decimals: int | None = None
    terminal: bool = False

    @classmethod
    def of_model(cls, output_kind: str, task_type: str = "multiclass") -> "OutputDomain":
        """The domain of a model's raw output, as its metadata declares it."""
        if output_kind == "probabilities":
            row_sum = (1.0 - SUM_TOLERANCE, 1.0 + SUM_TOLERANCE) if task_type == "multiclass" else None
            return cls("probabilities", task_type, row_sum, 0.0, 1.0)
        if output_kind == "logits":
            return cls("logits", task_type)
        raise FilterError(f"expected output_kind 'logits' or 'probabilities', got {output_kind!r}")

    def continuous(self, kind: str | None = None) -> "OutputDomain":
        """The domain after an operation that leaves unbounded, continuous values."""
        return replace(self, kind=kind or self.kind, row_sum=None, low=-math.inf, high=math.inf, decimals=None)

    def simplex(self) -> "OutputDomain":
        """The domain after (re)normalising rows onto the probability simplex."""
        return replace(
            self,
            kind="probabilities",
            row_sum=(1.0 - SUM_TOLERANCE, 1.0 + SUM_TOLERANCE),
            low=0.0,
            high=1.0,
            decimals=None,
        )


_WORST_CASE = OutputDomain()


class OutputFilter:
    """Base class of every output filter.

    Subclasses set ``name``, ``accepts``, ``produces``, ``is_random`` and
    ``capacity_rule``, and implement :meth:`apply` on a 2-D ``(N, K)`` float array with
    vectorised numpy (no per-row Python loops): row ``i`` of the result must depend on
    row ``i`` of the input only. ``__call__`` validates the array and calls ``apply``.
    Filters never modify their input in place.
    """

    name: ClassVar[str] = "filter"
    accepts: ClassVar[str] = "any"  # "logits" | "probabilities" | "any"
    produces: ClassVar[str] = "same"  # "same" | "probabilities" | "scores" | "labels" | "logits"
    is_random: ClassVar[bool] = False
    capacity_rule: ClassVar[str] = "unbounded: a deterministic map keeps at most the information it receives"

    @property
    def needs_inputs(self) -> bool:
        """True when :meth:`apply` needs per-row key material (``row_keys``) derived from the model inputs.

        Consistent (keyed) noise does: its noise is a keyed hash of each input's bytes.
        """
        return False

    def __call__(
        self,
        outputs: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        user_id: Any = None,
        inputs: np.ndarray | None = None,
    ) -> Any:
        if not isinstance(outputs, np.ndarray) or outputs.ndim != 2 or outputs.dtype.kind != "f":
            got = f"{type(outputs).__name__} {getattr(outputs, 'shape', '')} {getattr(outputs, 'dtype', '')}"
            raise FilterError(f"expected a 2-D float array of shape (N, K), got {got.strip()}; pass a batch of rows")
        if rng is None and self.is_random:
            rng = secure_rng(outputs.size)
        if self.needs_inputs:
            return self.apply(outputs, rng, user_id=user_id, row_keys=row_digests(inputs, len(outputs), self.name))
        return self.apply(outputs, rng, user_id=user_id)

    def apply(self, outputs: np.ndarray, rng: np.random.Generator | None, *, user_id: Any = None) -> np.ndarray:
        """Filter a validated ``(N, K)`` float array; override in subclasses."""
        raise FilterError(
            f"expected {type(self).__name__} to override OutputFilter.apply(), got the base method; "
            "implement apply(outputs, rng, *, user_id=None) in the subclass"
        )

    # --- typing -------------------------------------------------------------------------
    def check_input(self, domain: OutputDomain) -> None:
        """Raise FilterError when this filter cannot take values of ``domain``."""
        if domain.terminal:
            raise FilterError(
                f"expected (N, K) rows for filter {self.name!r}, got one label index per row; "
                "put the index-producing filter (e.g. Argmax(output='index')) last"
            )
        if self.accepts != "any" and domain.kind != self.accepts:
            raise FilterError(
                f"expected {self.accepts}, got {domain.kind}; filter {self.name!r} takes {self.accepts} only: "
                + _fix_hint(self.accepts, domain.kind)
            )

    def output_domain(self, domain: OutputDomain, num_classes: int | None = None) -> OutputDomain:
        """The domain of this filter's output given its input ``domain`` (after check_input).

        ``num_classes`` (K) lets a filter keep tighter facts (e.g. the row-sum slack after
        rounding); without it a filter must drop what depends on K.
        """
        return domain if self.produces == "same" else domain.continuous(self.produces)

    def bind(self, domain: OutputDomain) -> "OutputFilter":
        """This filter configured for inputs of ``domain`` (resolves 'auto' settings); default: itself."""
        return self

    # --- capacity ----------------------------------------------------------------------
    def capacity_bits(self, num_classes: int, domain: OutputDomain | None = None) -> float:
        """Upper bound (bits) on what one output row of this filter carries, given its input domain.

        ``math.inf`` means this filter alone does not bound it (a pipeline takes the
        minimum over its stages: no later stage can add information about the input).
        """
        return math.inf

    # --- description -------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The filter's parameters (dataclass fields by default)."""
        try:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}  # type: ignore[arg-type]
        except TypeError:
            return {}

    def to_dict(self) -> dict[str, Any]:
        params = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.params().items()}
        return {
            "name": self.name,
            **params,
            "accepts": self.accepts,
            "produces": self.produces,
            "random": self.is_random,
            "release_capacity": self.capacity_rule,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _fix_hint(wanted: str, got: str) -> str:
    if wanted == "probabilities" and got == "logits":
        return "put Softmax() (multiclass) or Sigmoid() (multilabel) before it"
    if wanted == "logits" and got == "probabilities":
        return "the model already outputs probabilities; remove this filter or use one that accepts probabilities"
    return f"reorder the pipeline so that it receives {wanted}"


class FilterPipeline:
    """Filters applied in order. Bind it to a model's output kind to type-check the chain.

    ``FilterPipeline(filters)`` is unbound; ``FilterPipeline(filters, input_kind="logits")``
    (or ``.bind(...)``) checks every stage against the kinds flowing through it, raises
    :class:`FilterError` ("expected logits, got probabilities; ...") on a mismatch and
    resolves 'auto' settings. Calling it fails closed: any exception in a stage becomes
    a :class:`FilterError` naming the stage and the exception type only (never its
    message, which may quote output values); :class:`PrivacyBudgetExceededError` keeps
    its type and message.
    """

    def __init__(
        self,
        filters: Iterable[OutputFilter] | OutputFilter = (),
        *,
        input_kind: str | None = None,
        task_type: str = "multiclass",
    ) -> None:
        if isinstance(filters, OutputFilter):
            filters = [filters]
        elif isinstance(filters, FilterPipeline):
            filters = filters.filters
        filters = tuple(filters)
        for position, stage in enumerate(filters):
            if not isinstance(stage, OutputFilter):
                raise FilterError(
                    f"expected OutputFilter instances, got {type(stage).__name__} at position {position}; "
                    "build filters from edgeguard.filters (e.g. Softmax(), Round(2))"
                )
        self.input_kind = input_kind
        self.task_type = task_type
        if input_kind is not None:
            filters = self._bound(filters, OutputDomain.of_model(input_kind, task_type))
        self.filters: tuple[OutputFilter, ...] = filters
        # Stages that keep the base __call__ get their apply() called directly (the pipeline checks
        # its input once; a stage handing a bad array on fails in the next stage or the final check).
        self._steps = tuple(
            stage.apply if type(stage).__call__ is OutputFilter.__call__ else stage for stage in filters
        )
        self.is_random = any(stage.is_random for stage in filters)
        #: True when some stage needs the model inputs (consistent noise): call with ``inputs=``.
        self.needs_inputs = any(stage.needs_inputs for stage in filters)
        self._keyed = tuple(stage.needs_inputs for stage in filters)
        self.terminal = bool(filters) and self.domains()[-1].terminal

    @staticmethod
    def _bound(filters: Sequence[OutputFilter], domain: OutputDomain) -> tuple[OutputFilter, ...]:
        # Called before num_classes is known: the type checks do not depend on K.
        bound = []
        for position, stage in enumerate(filters):
            try:
                stage.check_input(domain)
            except FilterError as error:
                raise FilterError(f"{error} (pipeline position {position})") from None
            stage = stage.bind(domain)
            bound.append(stage)
            domain = stage.output_domain(domain)
        return tuple(bound)

    def bind(self, input_kind: str, task_type: str = "multiclass") -> "FilterPipeline":
        """A copy of this pipeline type-checked and resolved for a model's output kind."""
        return FilterPipeline(self.filters, input_kind=input_kind, task_type=task_type)

    def input_domain(self) -> OutputDomain:
        if self.input_kind is not None:
            return OutputDomain.of_model(self.input_kind, self.task_type)
        # Unbound: assume the worst case (unbounded logits) unless the first stage needs probabilities.
        if self.filters and self.filters[0].accepts == "probabilities":
            return OutputDomain.of_model("probabilities", self.task_type)
        return replace(_WORST_CASE, task_type=self.task_type)

    def domains(self, num_classes: int | None = None) -> list[OutputDomain]:
        """The domain entering each stage, then the released domain (len(filters) + 1 entries)."""
        domain = self.input_domain()
        out = [domain]
        for stage in self.filters:
            domain = stage.output_domain(domain, num_classes)
            out.append(domain)
        return out

    def capacity_bits(self, num_classes: int) -> float:
        """Upper bound on the bits one released row carries (min over stages; inf = unbounded)."""
        domains = self.domains(num_classes)
        return min((stage.capacity_bits(num_classes, d) for stage, d in zip(self.filters, domains)), default=math.inf)

    def __call__(
        self,
        outputs: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        user_id: Any = None,
        inputs: np.ndarray | None = None,
    ) -> Any:
        """Release ``outputs`` (N, K). ``inputs``: the model inputs of these rows (N, ...), needed by
        consistent-noise stages only (:attr:`needs_inputs`); SafeModel passes its validated batch."""
        if rng is None and self.is_random:
            rng = secure_rng(getattr(outputs, "size", RESEED_AFTER_DRAWS))
        stage_index = -1
        result = outputs
        failure: BaseException | None = None
        if not isinstance(outputs, np.ndarray) or outputs.ndim != 2 or outputs.dtype.kind != "f":
            got = f"{type(outputs).__name__} {getattr(outputs, 'shape', '')} {getattr(outputs, 'dtype', '')}"
            raise FilterError(f"expected a 2-D float array of shape (N, K), got {got.strip()}; pass a batch of rows")
        keys = None
        if self.needs_inputs:
            names = ", ".join(stage.name for stage, keyed in zip(self.filters, self._keyed) if keyed)
            keys = row_digests(inputs, len(outputs), names)
        try:
            for stage_index, step in enumerate(self._steps):  # noqa: B007 (read in the except)
                if keys is not None and self._keyed[stage_index]:
                    result = step(result, rng, user_id=user_id, row_keys=keys)
                else:
                    result = step(result, rng, user_id=user_id)
        except PrivacyBudgetExceededError as error:  # its message is kept only when edgeguard's budget wrote it
            failure = PrivacyBudgetExceededError(
                *(
                    error.args
                    if getattr(error, "values_free", False)
                    else (
                        f"expected filter {self.filters[stage_index].name!r} (pipeline position {stage_index}) to have "
                        "privacy budget left, got a refusal; nothing was released. Use a new budget",
                    )
                )
            )
        except Exception as error:  # fail closed, and never quote the error's message (it may hold outputs)
            failure = FilterError(
                f"expected every filter to succeed, got {type(error).__name__} in filter "
                f"{self.filters[stage_index].name!r} (pipeline position {stage_index}); nothing was released. "
                "Run that filter alone on synthetic outputs to see the details"
            )
        except BaseException as error:  # KeyboardInterrupt, SystemExit, a filter's own BaseException subclass
            failure = _without_values(error, f"filter {self.filters[stage_index].name!r} (pipeline position {stage_index})")
        if failure is None:
            # Fast path (one reduction): a finite sum means finite values; anything else is checked in full.
            if (
                isinstance(result, np.ndarray)
                and result.shape == (outputs.shape[:1] if self.terminal else outputs.shape)
                and (result.dtype.kind != "f" or math.isfinite(np.add.reduce(result, axis=None)))
            ):
                return result
            failure = _check_release(result, outputs, self.terminal)
            if failure is None:
                return result
        # Raised outside the except blocks (no __context__) after dropping every
        # reference to output values from this frame.
        outputs = result = None
        raise failure

    def __len__(self) -> int:
        return len(self.filters)

    def __iter__(self):
        return iter(self.filters)

    def to_dict(self, num_classes: int | None = None) -> dict[str, Any]:
        stages = []
        for stage, domain in zip(self.filters, self.domains(num_classes)):
            entry = stage.to_dict()
            if num_classes is not None:
                entry["capacity_bits"] = _json_bits(stage.capacity_bits(num_classes, domain))
            stages.append(entry)
        out: dict[str, Any] = {"input_kind": self.input_kind, "task_type": self.task_type, "filters": stages}
        if num_classes is not None:
            bits = self.capacity_bits(num_classes)
            out["capacity_bits"] = _json_bits(bits)
            out["release_capacity"] = describe_bits(bits)
        return out

    def __repr__(self) -> str:
        return f"FilterPipeline([{', '.join(map(repr, self.filters))}], input_kind={self.input_kind!r})"


def _check_release(result: Any, outputs: Any, terminal: bool) -> Exception | None:
    """Fail closed on a release that is not a finite array of the expected shape."""
    rows = len(outputs)
    if not isinstance(result, np.ndarray):
        return FilterError(f"expected the pipeline to return a numpy array, got {type(result).__name__}")
    expected = (rows,) if terminal else (rows, outputs.shape[1])
    if result.shape != expected:
        return FilterError(f"expected a release of shape {expected}, got {result.shape}; a filter changed the shape")
    if result.dtype.kind == "f" and not np.isfinite(result).all():
        return FilterError(
            "expected finite released values, got NaN or inf; the model or a filter produced non-finite "
            "values, so nothing was released"
        )
    return None


def _json_bits(bits: float) -> float | None:
    return None if math.isinf(bits) else round(bits, 6)


def describe_bits(bits: float) -> str:
    """Human-readable release capacity."""
    if math.isinf(bits):
        return "unbounded (raw or continuous values can carry arbitrarily many bits)"
    return f"at most {bits:.3g} bits per released row"


def sentinel_capacity_bits(bits: float) -> float:
    """The capacity bound of a release that may also be the failed-check sentinel (a guarded file).

    A guarded file releases, per row, one of the ``2**bits`` values the pipeline can give, or
    the sentinel row (all NaN; label indices: -1), which a failed input or output check puts
    on the whole batch and which a vicious model can trigger on purpose. So one row carries at
    most ``log2(2**bits + 1)`` bits (``log2(K + 1)`` for argmax over K classes), at most one bit
    more than ``bits`` and about ``2**-bits * log2(e)`` more for large ``bits``; inf stays inf.
    (Per batch of n rows: ``log2(2**(n * bits) + 1)``, below n times the per-row bound.)
    """
    if math.isinf(bits):
        return math.inf
    return float(bits) + math.log2(1.0 + 2.0 ** -float(bits))


def pipeline_capacity_bits(
    pipeline: FilterPipeline | OutputFilter | Sequence[OutputFilter],
    num_classes: int,
    *,
    input_kind: str | None = None,
    task_type: str = "multiclass",
) -> float:
    """Upper bound on the bits one released row of ``pipeline`` can carry about the input.

    ``math.inf`` means unbounded (raw floats, continuous noise). The bound is the minimum
    over stages (data-processing inequality) of each stage's own bound, e.g.
    ``log2 C(10^d + K - 1, K - 1)`` for probabilities rounded to ``d`` decimals (with slack
    for rounding errors in the row sum), ``log2 K`` for argmax, ``epsilon * log2(e)`` for
    the clipped-Laplace mechanism. Without ``input_kind`` (and for an unbound pipeline) the
    model output is assumed to be unbounded logits unless the first filter takes
    probabilities only.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise FilterError(f"expected num_classes to be a positive integer, got {num_classes!r}")
    if isinstance(pipeline, FilterPipeline):
        if input_kind is not None:
            pipeline = pipeline.bind(input_kind, task_type)
    else:
        pipeline = FilterPipeline(pipeline, input_kind=input_kind, task_type=task_type)
    return pipeline.capacity_bits(int(num_classes))


# --- randomness ----------------------------------------------------------------------------
_THREAD_STATE = threading.local()


def row_digests(inputs: Any, rows: int, what: str = "consistent noise") -> list[bytes]:
    """SHA-256 of every input row's bytes (with its dtype and shape): the key material of consistent noise.

    ``inputs`` is the (N, ...) batch the outputs came from (SafeModel's validated float32
    batch). A row's digest depends on that row only, so the same input gives the same
    digest in any batch.
    """
    if not isinstance(inputs, np.ndarray) or inputs.ndim < 1 or len(inputs) != rows:
        got = "none" if inputs is None else f"{type(inputs).__name__} {getattr(inputs, 'shape', '')}"
        raise FilterError(
            f"expected the model inputs of the {rows} row(s) for {what} (its noise is a keyed hash of each input), "
            f"got {got}; call the pipeline with inputs=batch (SafeModel.predict does)"
        )
    batch = np.ascontiguousarray(inputs)
    header = f"{batch.dtype.str}{batch.shape[1:]}".encode()
    return [hashlib.sha256(header + row.tobytes()).digest() for row in batch]


#: A thread's generator gets fresh OS entropy once it has produced this many values.
#: Known seed-recovery attacks on PCG64 need hundreds of *exact* consecutive outputs
#: (Bouillaguet et al., 2020); a release shows only noisy, usually rounded sums, and
#: no seed ever serves more than this many draws.
RESEED_AFTER_DRAWS = 256


def _reseed(bit_generator: np.random.PCG64) -> None:
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": secrets.randbits(128), "inc": secrets.randbits(128) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }


def secure_rng(draws: int = RESEED_AFTER_DRAWS) -> np.random.Generator:
    """This thread's numpy Generator, reseeded with 256 bits from the OS CSPRNG (``secrets``) when due.

    Every thread has its own PCG64 (concurrent calls never share state). Its state and
    increment are replaced by fresh ``secrets`` entropy before a call that is about to
    draw ``draws`` values whenever the draws since the last reseed would exceed
    :data:`RESEED_AFTER_DRAWS` (so a call for a large batch, or a call without ``draws``,
    always starts from a fresh seed). Use the result within the current call only.
    """
    state = getattr(_THREAD_STATE, "state", None)
    if state is None:
        bit_generator = np.random.PCG64()
        state = _THREAD_STATE.state = [bit_generator, np.random.Generator(bit_generator), RESEED_AFTER_DRAWS]
    used = state[2] + draws
    if used >= RESEED_AFTER_DRAWS:
        _reseed(state[0])
        used = draws
    state[2] = used
    return state[1]


def make_rng(seed: Any = None, draws: int = RESEED_AFTER_DRAWS) -> np.random.Generator:
    """``secure_rng(draws)`` when ``seed`` is None, else a reproducible Generator (for tests)."""
    if seed is None:
        return secure_rng(draws)
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _without_values(error: BaseException, where: str) -> BaseException:
    """A fresh exception of ``error``'s type whose message holds no output values (fail closed).

    A BaseException (KeyboardInterrupt, SystemExit, a filter's own subclass) keeps its type, so
    the caller's handling is unchanged, but not its message, arguments or traceback: they can
    quote the outputs the filter was given.
    """
    kind = type(error)
    message = (
        f"{kind.__name__} raised in {where}; nothing was released. Its message is withheld (it can quote "
        "output values): run that filter alone on synthetic outputs to see it"
    )
    try:
        fresh = kind(message)
    except Exception:  # a constructor that wants other arguments
        fresh = kind.__new__(kind)
    fresh.args = (message,)
    return fresh
