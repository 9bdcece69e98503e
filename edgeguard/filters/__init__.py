"""Output filters: what a user releases instead of the model's raw output.

Every filter works on a batch ``(N, K)`` (vectorised; row i depends on row i only),
declares what it accepts and produces, and bounds the information one released row
can carry (:func:`pipeline_capacity_bits`). Compose them with :class:`FilterPipeline`
or pass a list to :class:`edgeguard.SafeModel`.

======================  ==========================  ==============================================
filter                  accepts -> produces         capacity of one released row (K classes)
======================  ==========================  ==============================================
Softmax                 logits -> probabilities     unbounded (one-to-one up to a shift)
Sigmoid                 logits -> probabilities     unbounded (one-to-one)
Round(d, clip)          any -> same                 probs: log2 C(10^d+K-1, K-1) + slack (row sums
                                                    are off by <= K/2 steps); clipped logits:
                                                    K log2(2c 10^d + 1); logits: unbounded
Round(d, preserve_sum)  probabilities -> same       exactly log2 C(10^d+K-1, K-1) (largest remainder)
Truncate(d, clip)       any -> same                 as Round (truncation toward zero)
TopK(k)                 any -> same                 after Round: log2 C(K,k) + log2 C(10^d+k, k)
Argmax(output)          any -> labels               log2 K
LabelConfidence(L)      probabilities -> probs      log2 K + log2 L (top-1 label + confidence in L levels)
GaussianNoise(std)      any -> same                 unbounded (continuous); key= makes it consistent
LaplaceNoise(scale)     any -> same                 unbounded (continuous); key= makes it consistent
LabelPreservingNoise    any -> same                 unbounded; top-1 class never changes
ClippedLaplace(c, eps)  any -> same                 eps * log2(e) (eps-DP, OpenDP sampler), per-user budget
Rounded(d=3)            any -> same                 as Round (IBM ART name and default)
HighConfidence(cutoff)  any -> same                 unbounded on its own
ReverseSigmoid(b, g)    probabilities -> probs      unbounded on its own
ClassLabels()           any -> labels               log2 K (multiclass), K bits (multilabel)
======================  ==========================  ==============================================
"""

from edgeguard.filters import emitters as _emitters  # noqa: F401  (registers every filter's ONNX emitter)
from edgeguard.filters.art import ClassLabels, HighConfidence, ReverseSigmoid, Rounded
from edgeguard.filters.base import (
    FilterPipeline,
    OutputDomain,
    OutputFilter,
    make_rng,
    pipeline_capacity_bits,
    row_digests,
    secure_rng,
    sentinel_capacity_bits,
)
from edgeguard.filters.basic import Argmax, LabelConfidence, Round, Sigmoid, Softmax, TopK, Truncate
from edgeguard.filters.noise import GaussianNoise, LabelPreservingNoise, LaplaceNoise, device_secret
from edgeguard.filters.privacy import ClippedLaplace, PrivacyAccountant
from edgeguard.filters.spec import (
    FILTER_NAMES,
    FilterSpec,
    default_filter_specs,
    parse_filter_spec,
    parse_filter_specs,
)

__all__ = [
    "OutputFilter",
    "OutputDomain",
    "FilterPipeline",
    "pipeline_capacity_bits",
    "sentinel_capacity_bits",
    "secure_rng",
    "make_rng",
    "row_digests",
    "device_secret",
    "Softmax",
    "Sigmoid",
    "Round",
    "Truncate",
    "TopK",
    "Argmax",
    "LabelConfidence",
    "GaussianNoise",
    "LaplaceNoise",
    "LabelPreservingNoise",
    "ClippedLaplace",
    "PrivacyAccountant",
    "Rounded",
    "HighConfidence",
    "ReverseSigmoid",
    "ClassLabels",
    "FilterSpec",
    "FILTER_NAMES",
    "parse_filter_spec",
    "parse_filter_specs",
    "default_filter_specs",
]
