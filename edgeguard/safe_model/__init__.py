"""SafeModel: run a provider's ONNX classifier on the device and release only filtered outputs.

One public class, :class:`SafeModel` (:mod:`~edgeguard.safe_model.model`: construction,
release and predict), helped by small modules:

- :mod:`~edgeguard.safe_model.policy`: the verdict policy (``verdict=``, ``on_vicious=``);
- :mod:`~edgeguard.safe_model.session`: onnxruntime providers, silent sessions, the per-call
  deadline, and error scrubbing (nothing onnxruntime wrote reaches the caller);
- :mod:`~edgeguard.safe_model.validation`: input validation, with a fix in every message.
"""

from edgeguard.safe_model.model import SafeModel
from edgeguard.safe_model.policy import VET_POLICIES, ViciousModelWarning
from edgeguard.safe_model.session import GPU_PROVIDERS

__all__ = ["SafeModel", "ViciousModelWarning", "GPU_PROVIDERS", "VET_POLICIES"]
