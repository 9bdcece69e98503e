"""Default-deny on the path to the output: what a classifier's graph may compute.

Classifiers exported by torch, TensorFlow (tf2onnx) and scikit-learn (skl2onnx) use a
small set of operators between the image and the class scores. A provider who has read
the vet builds its tricks from other ones: ``Sin`` to detect the 8-bit pixel grid or to
round smoothly (``v - sin(2 pi v) / (2 pi)``), comparisons and ``Where`` to switch,
``Round``/``Floor``/``Mod`` to snap outputs to a lattice, casts to 16-bit floats to
quantise, and model-local functions to hide any of these from a scan of the main graph.

This module follows every value computed from the input through the main graph, into
the bodies of model-local functions (recursively) and subgraphs, and reports:

- ``op-not-allowed`` (high): an operator outside :data:`CLASSIFIER_OPS` on that path; the
  verdict is then at best inconclusive, naming the op;
- ``low-precision-cast`` (high): a Cast to float16/bfloat16 (or an int16 type) on that path;
- ``hidden-in-function`` (high): rounding, casts or disallowed ops inside a model-local
  function body, which the top-level scan alone would not see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgeguard.vetting.report import Finding

__all__ = ["CLASSIFIER_OPS", "output_path_findings"]

#: Operators that exported image classifiers (torch, TF via tf2onnx, scikit-learn via skl2onnx) use.
CLASSIFIER_OPS = frozenset(
    {
        # layers
        "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum",
        "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "LRN",
        "LpNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Dropout",
        # activations
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
        "Softplus", "Softsign", "Gelu", "Erf", "Mish", "Softmax", "LogSoftmax", "Clip",
        # arithmetic used by normalisation layers and exporters
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Log", "Reciprocal", "Max", "Min",
        "Sum", "Mean", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare",
        # layout
        "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
        "Identity", "Pad", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth",
        "Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike",
        # scikit-learn (ai.onnx.ml)
        "LinearClassifier", "LinearRegressor", "SVMClassifier", "SVMRegressor", "TreeEnsembleClassifier",
        "TreeEnsembleRegressor", "Scaler", "Normalizer", "ZipMap", "ArrayFeatureExtractor",
    }
)
_STANDARD = {"", "ai.onnx", "ai.onnx.ml"}
_FLOAT_OK = {1, 11}  # FLOAT, DOUBLE
_LOW_PRECISION = {10, 16, 5, 4}  # FLOAT16, BFLOAT16, INT16, UINT16
_SUSPECT_IN_FUNCTIONS = {"Round", "Floor", "Ceil", "Mod", "Sin", "Cos", "Cast", "Where", "Sign"}


def _cast_target(node: Any) -> int | None:
    for attribute in node.attribute:
        if attribute.name == "to":
            return int(attribute.i)
    return None


def _label(node: Any, prefix: str = "") -> str:
    return prefix + (node.name or (node.output[0] if node.output else node.op_type))


def _subgraph_nodes(node: Any) -> Iterable[Any]:
    for attribute in node.attribute:
        graphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for graph in graphs:
            for inner in graph.node:
                yield inner
                yield from _subgraph_nodes(inner)


def _on_path(graph: Any) -> list[Any]:
    """Top-level nodes that depend on the image input and that a graph output depends on."""
    initializers = {init.name for init in graph.initializer}
    live = {v.name for v in graph.input if v.name not in initializers}
    forward = []
    for node in graph.node:  # topologically sorted (the checker enforces it)
        if any(name in live for name in node.input) or any(
            name in live for inner in _subgraph_nodes(node) for name in inner.input
        ):
            live.update(node.output)
            forward.append(node)
    needed = {v.name for v in graph.output}
    path = []
    for node in reversed(forward):
        if any(name in needed for name in node.output):
            path.append(node)
            needed.update(node.input)
            needed.update(name for inner in _subgraph_nodes(node) for name in inner.input)
    return list(reversed(path))


def _expand(node: Any, functions: dict[tuple[str, str], Any], depth: int = 0) -> Iterable[tuple[Any, bool]]:
    """``node`` itself, then every node inside it (function bodies, subgraphs), with 'inside' flags."""
    yield node, depth > 0
    if depth > 16:  # a function calling itself: onnx forbids it, but do not recurse forever
        return
    function = functions.get((node.domain, node.op_type))
    if function is not None:
        for inner in function.node:
            yield from _expand(inner, functions, depth + 1)
    for inner in _subgraph_nodes(node):
        yield from _expand(inner, functions, depth + 1)


def output_path_findings(model: Any) -> list[Finding]:
    """Findings for operators outside :data:`CLASSIFIER_OPS`, 16-bit casts and hidden function bodies."""
    functions = {(f.domain, f.name): f for f in model.functions}
    denied: dict[str, str] = {}
    casts: list[str] = []
    hidden: dict[str, set[str]] = {}
    for top in _on_path(model.graph):
        for node, inside in _expand(top, functions):
            if (node.domain, node.op_type) in functions:
                continue  # the call itself: its body is scanned
            if inside and (top.domain, top.op_type) in functions and node.op_type in _SUSPECT_IN_FUNCTIONS:
                hidden.setdefault(top.op_type, set()).add(node.op_type)
            if node.op_type == "Cast" or node.op_type == "CastLike":
                target = _cast_target(node)
                if target in _LOW_PRECISION:
                    casts.append(_label(node))
                    continue
                if target is not None and target not in _FLOAT_OK:
                    continue  # casts to integers: the non-differentiable-op finding of the static audit
            if node.domain not in _STANDARD or node.op_type not in CLASSIFIER_OPS:
                denied.setdefault(node.op_type if node.domain in _STANDARD else f"{node.domain}.{node.op_type}", _label(node))
    findings = []
    for op, where in sorted(denied.items()):
        findings.append(
            Finding(
                "op-not-allowed",
                "high",
                f"expected only operators that exported classifiers use on the path from the input to the output, "
                f"got {op} ({where!r}); the vet cannot vouch for what it computes, so no honest verdict is given",
                "ask the provider for a plain export of the classifier (torch.onnx.export, tf2onnx or skl2onnx) "
                "without post-processing nodes",
                where,
            )
        )
    if casts:
        findings.append(
            Finding(
                "low-precision-cast",
                "high",
                f"found Cast to a 16-bit type on the path to the output ({', '.join(casts[:5])}): it quantises the "
                "values and can hide a code below the quantisation step",
                "ask for a float32 export; a 16-bit model must be vetted as such by a reviewer",
                casts[0],
            )
        )
    for function, ops in sorted(hidden.items()):
        findings.append(
            Finding(
                "hidden-in-function",
                "high",
                f"the model-local function {function!r} on the path to the output contains {sorted(ops)}: "
                "rounding, casts or switches hidden from a scan of the main graph",
                "ask for an export without model-local functions (inline them)",
                function,
            )
        )
    return findings
