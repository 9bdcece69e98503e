"""Filter specs: short strings that name an output-filter pipeline, for the CLI and reports.

Grammar::

    specs    := spec (";" spec)*
    spec     := "none" | stage (">" stage)*
    stage    := name [":" argument ("," argument)*]
    argument := value | key "=" value

Stages run left to right, so ``softmax>round:2`` is ``[Softmax(), Round(2)]``. Positional
arguments fill the stage's parameters in order; ``none`` (alias ``raw``) is the raw
model output, with no filter. Examples::

    none  softmax  softmax>round:2  round:1  gaussian:0.5  laplace:scale=0.3
    softmax>gaussian:0.03  softmax>top_k:3  argmax  label_preserving:3,distribution=laplace
    clipped_laplace:c=5,eps=1  rounded  high_confidence:0.25  reverse_sigmoid:1,0.1
    gaussian:1,consistent=true  softmax>label_confidence:4

``consistent=true`` on a noise stage (gaussian, laplace, label_preserving) gives it a
fresh device secret (:func:`edgeguard.filters.device_secret`) each time the spec is
built: consistent noise, a keyed hash of each input (see :mod:`edgeguard.filters.noise`).

``clipped_laplace`` gets an unlimited privacy budget unless ``budget=`` is given: the
bench measures what one release leaks, not how many releases a budget allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edgeguard.errors import FilterError
from edgeguard.filters.art import ClassLabels, HighConfidence, ReverseSigmoid, Rounded
from edgeguard.filters.base import OutputFilter
from edgeguard.filters.basic import Argmax, LabelConfidence, Round, Sigmoid, Softmax, TopK, Truncate
from edgeguard.filters.noise import GaussianNoise, LabelPreservingNoise, LaplaceNoise, device_secret
from edgeguard.filters.privacy import ClippedLaplace

__all__ = ["FilterSpec", "parse_filter_spec", "parse_filter_specs", "default_filter_specs", "FILTER_NAMES"]

#: Privacy budget given to ``clipped_laplace`` stages that do not name one.
UNLIMITED_BUDGET = 1e300
_NONE_NAMES = ("none", "raw")


class _BadValue(FilterError):
    """A parameter value that does not parse; its message says what was expected."""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _BadValue("an integer") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadValue("a number") from None
    if not math.isfinite(value):
        raise _BadValue("a finite number")
    return value


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise _BadValue("true or false")


def _renormalize(text: str) -> bool | str:
    return "auto" if text.lower() == "auto" else _boolean(text)


def _word(text: str) -> str:
    return text


def _optional_number(text: str) -> float | None:
    return None if text.lower() == "none" else _number(text)


@dataclass(frozen=True)
class _Kind:
    """How to build one stage: the filter class, its parameters (name, parser) in positional order."""

    factory: Callable[..., OutputFilter]
    params: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    aliases: tuple[str, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()  # short key -> parameter name
    required: int = 0  # how many leading parameters must be given


def _clipped_laplace(clip: float, epsilon: float, budget: float = UNLIMITED_BUDGET, on_exhausted: str = "refuse"):
    return ClippedLaplace(clip, epsilon, budget=budget, on_exhausted=on_exhausted)


def _consistent(factory: Callable[..., OutputFilter]) -> Callable[..., OutputFilter]:
    """A noise factory that turns ``consistent=True`` into a fresh device secret (``key=``)."""

    def build(*args: Any, consistent: bool = False, **kwargs: Any) -> OutputFilter:
        return factory(*args, key=device_secret() if consistent else None, **kwargs)

    return build


_KINDS: dict[str, _Kind] = {
    "softmax": _Kind(Softmax),
    "sigmoid": _Kind(Sigmoid),
    "round": _Kind(
        Round, (("decimals", _integer), ("clip", _optional_number), ("preserve_sum", _boolean)), ("rounding",), (), 1
    ),
    "truncate": _Kind(Truncate, (("decimals", _integer), ("clip", _optional_number)), (), (), 1),
    "top_k": _Kind(TopK, (("k", _integer), ("renormalize", _boolean)), ("topk",), (), 1),
    "argmax": _Kind(Argmax, (("output", _word),), ("label", "labels")),
    "gaussian": _Kind(
        _consistent(GaussianNoise),
        (("std", _number), ("renormalize", _renormalize), ("consistent", _boolean)),
        ("gaussian_noise",),
        (),
        1,
    ),
    "laplace": _Kind(
        _consistent(LaplaceNoise),
        (("scale", _number), ("renormalize", _renormalize), ("consistent", _boolean)),
        ("laplace_noise",),
        (),
        1,
    ),
    "label_preserving": _Kind(
        _consistent(LabelPreservingNoise),
        (("std", _number), ("distribution", _word), ("renormalize", _renormalize), ("consistent", _boolean)),
        ("label_preserving_noise", "lpn"),
        (),
        1,
    ),
    "clipped_laplace": _Kind(
        _clipped_laplace,
        (("clip", _number), ("epsilon", _number), ("budget", _number), ("on_exhausted", _word)),
        ("dp",),
        (("c", "clip"), ("eps", "epsilon")),
        2,
    ),
    "rounded": _Kind(Rounded, (("decimals", _integer),)),
    "high_confidence": _Kind(HighConfidence, (("cutoff", _number),)),
    "reverse_sigmoid": _Kind(ReverseSigmoid, (("beta", _number), ("gamma", _number))),
    "class_labels": _Kind(ClassLabels, (("threshold", _optional_number),)),
    "label_confidence": _Kind(LabelConfidence, (("levels", _integer),), ("confidence",), (), 1),
}
_ALIASES = {alias: name for name, kind in _KINDS.items() for alias in kind.aliases}
#: Every stage name the parser knows (canonical names; aliases are accepted too).
FILTER_NAMES: tuple[str, ...] = ("none", *_KINDS)
_SHORT_KEYS = {name: dict(kind.keys) for name, kind in _KINDS.items()}
_EXAMPLES = "e.g. 'softmax>round:2', 'gaussian:0.5' or 'clipped_laplace:c=5,eps=1'"


@dataclass(frozen=True)
class FilterSpec:
    """A parsed spec: canonical ``text`` and its stages as (name, {parameter: value}) pairs.

    :meth:`build` makes fresh filter objects every time (a ``clipped_laplace`` stage gets
    its own privacy accountant).
    """

    text: str
    stages: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    @property
    def is_raw(self) -> bool:
        """True for ``none``: the raw model output, no filter."""
        return not self.stages

    def build(self) -> list[OutputFilter]:
        """The filters of this spec, in order (an empty list for ``none``)."""
        return [_KINDS[name].factory(**dict(params)) for name, params in self.stages]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "stages": [{"name": name, **dict(params)} for name, params in self.stages]}

    def __str__(self) -> str:
        return self.text


def _fail(text: str, problem: str) -> FilterError:
    return FilterError(f"expected a filter spec ({_EXAMPLES}), got {text!r}: {problem}")


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse_stage(stage: str, text: str) -> tuple[str, tuple[tuple[str, Any], ...], str]:
    name, _, argument_text = stage.partition(":")
    name = name.strip().lower()
    if not name:
        raise _fail(text, "a stage has no name (check for a stray '>' or ':')")
    if name in _NONE_NAMES:
        raise _fail(text, f"{name!r} means no filter and cannot be combined with other stages")
    canonical = _ALIASES.get(name, name)
    if canonical not in _KINDS:
        raise _fail(text, f"unknown filter {name!r}; known filters: {', '.join(FILTER_NAMES)}")
    kind = _KINDS[canonical]
    names = [param for param, _ in kind.params]
    parsers = dict(kind.params)
    values: dict[str, Any] = {}
    arguments = [part.strip() for part in argument_text.split(",")] if argument_text.strip() else []
    if ":" in argument_text:
        raise _fail(text, f"stage {stage!r} has more than one ':'; separate stages with '>'")
    unkeyed = sum("=" not in argument for argument in arguments)
    if unkeyed > len(names):
        raise _fail(text, f"{canonical!r} takes at most {len(names)} argument(s), got {unkeyed}")
    positional = 0
    for argument in arguments:
        if not argument:
            raise _fail(text, f"stage {stage!r} has an empty argument (check the commas)")
        key, equals, raw_value = argument.partition("=")
        if equals:
            key = _SHORT_KEYS[canonical].get(key.strip().lower(), key.strip().lower())
            raw_value = raw_value.strip()
            if key not in parsers:
                choices = ", ".join(names) if names else "none"
                raise _fail(text, f"{canonical!r} has no parameter {key!r}; its parameters: {choices}")
        else:
            if values.keys() - set(names[:positional]):
                raise _fail(text, f"positional argument {argument!r} after a key=value one in stage {stage!r}")
            key, raw_value = names[positional], argument
            positional += 1
        if key in values:
            raise _fail(text, f"parameter {key!r} of {canonical!r} is given twice")
        try:
            values[key] = parsers[key](raw_value)
        except ValueError as error:
            raise _fail(text, f"parameter {key!r} of {canonical!r} must be {error}, got {raw_value!r}") from None
    missing = [param for param in names[: kind.required] if param not in values]
    if missing:
        raise _fail(text, f"{canonical!r} needs {', '.join(missing)} (e.g. '{_example(canonical)}')")
    ordered = tuple((param, values[param]) for param in names if param in values)
    return canonical, ordered, _stage_text(canonical, ordered, kind)


def _example(name: str) -> str:
    return {
        "round": "round:2",
        "truncate": "truncate:2",
        "top_k": "top_k:3",
        "gaussian": "gaussian:0.5",
        "laplace": "laplace:0.5",
        "label_preserving": "label_preserving:1",
        "clipped_laplace": "clipped_laplace:c=5,eps=1",
        "label_confidence": "softmax>label_confidence:4",
    }.get(name, name)


def _stage_text(name: str, params: tuple[tuple[str, Any], ...], kind: _Kind) -> str:
    if not params:
        return name
    reverse = {long: short for short, long in kind.keys}
    first = kind.params[0][0]
    parts = []
    for position, (param, value) in enumerate(params):
        if position == 0 and param == first and kind.required <= 1:
            parts.append(_render(value))
        else:
            parts.append(f"{reverse.get(param, param)}={_render(value)}")
    return f"{name}:{','.join(parts)}"


def parse_filter_spec(text: str) -> FilterSpec:
    """Parse one spec (``"softmax>round:2"``) into a :class:`FilterSpec`; FilterError on a bad one.

    Every stage is built once here, so a bad value (``round:-1``) fails now, with the
    filter's own message.
    """
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "the spec is empty")
    cleaned = text.strip()
    if cleaned.lower() in _NONE_NAMES:
        return FilterSpec("none")
    stages, texts = [], []
    for stage in cleaned.split(">"):
        name, params, stage_text = _parse_stage(stage, cleaned)
        stages.append((name, params))
        texts.append(stage_text)
    spec = FilterSpec(">".join(texts), tuple(stages))
    try:
        spec.build()
    except FilterError as error:
        raise _fail(cleaned, str(error)) from None
    except TypeError as error:  # a parameter a filter does not accept
        raise _fail(cleaned, str(error)) from None
    return spec


def parse_filter_specs(texts: str | Iterable[str], output_kind: str = "logits") -> list[FilterSpec]:
    """Parse specs separated by ';' (one string or several); ``default`` expands to :func:`default_filter_specs`.

    ``output_kind`` is the raw output of the model the specs are for (it picks the default grid).

    Duplicates (same canonical text) are kept once, in first-seen order.
    """
    if isinstance(texts, str):
        texts = [texts]
    specs: list[FilterSpec] = []
    for text in texts:
        for part in str(text).split(";"):
            if not part.strip():
                continue
            if part.strip().lower() == "default":
                specs.extend(default_filter_specs(output_kind))
            else:
                specs.append(parse_filter_spec(part))
    if not specs:
        raise _fail(";".join(map(str, texts)), "no spec given")
    unique: dict[str, FilterSpec] = {}
    for spec in specs:
        unique.setdefault(spec.text, spec)
    return list(unique.values())


def default_filter_specs(output_kind: str = "logits") -> list[FilterSpec]:
    """The default grid for a multiclass model whose raw output is ``output_kind``.

    logits: none; softmax; probabilities rounded to 0-3 decimals; logits rounded to 0-3
    decimals; Gaussian and Laplace noise on logits (std / scale 0.3, 1, 3) and on
    probabilities (0.01, 0.03, 0.1); top-1 and top-3 probabilities; argmax; the top-1
    label with its confidence in 4 and 10 levels;
    label-preserving Gaussian noise on logits (std 1, 3, 10); clipped Laplace with
    clip 5 and epsilon 1, 10, 100, 1000. probabilities: the same without the softmax
    stage and without the logit-only entries.
    """
    if output_kind not in ("logits", "probabilities"):
        raise FilterError(f"expected output_kind 'logits' or 'probabilities', got {output_kind!r}")
    probs = "softmax>" if output_kind == "logits" else ""
    texts = ["none"]
    if output_kind == "logits":
        texts.append("softmax")
    texts += [f"{probs}round:{d}" for d in range(4)]
    if output_kind == "logits":
        texts += [f"round:{d}" for d in range(4)]
        texts += [f"gaussian:{s:g}" for s in (0.3, 1, 3)] + [f"laplace:{s:g}" for s in (0.3, 1, 3)]
    texts += [f"{probs}gaussian:{s:g}" for s in (0.01, 0.03, 0.1)] + [
        f"{probs}laplace:{s:g}" for s in (0.01, 0.03, 0.1)
    ]
    texts += [f"{probs}top_k:1", f"{probs}top_k:3", "argmax"]
    texts += [f"{probs}label_confidence:{levels}" for levels in (4, 10)]
    if output_kind == "logits":
        texts += [f"label_preserving:{s:g}" for s in (1, 3, 10)]
        texts += [f"clipped_laplace:c=5,eps={e:g}" for e in (1, 10, 100, 1000)]
    else:
        texts += [f"label_preserving:{s:g}" for s in (0.03, 0.1, 0.3)]
        texts += [f"clipped_laplace:c=1,eps={e:g}" for e in (10, 100, 1000)]
    return [parse_filter_spec(text) for text in texts]
