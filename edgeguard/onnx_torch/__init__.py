"""A strict, differentiable ONNX-to-torch interpreter.

``to_torch(model)`` turns an ONNX classifier or decoder into a ``torch.nn.Module`` whose
forward pass matches onnxruntime and whose parameters (the graph's float initializers)
can be fine-tuned. Vetting's fine-tune test and the bench's adaptive attacker use it;
anything it does not implement raises :class:`edgeguard.UnsupportedOpError` by name.
It needs torch (the ``torch`` extra).
"""

from edgeguard.onnx_torch.module import SUPPORTED_OPS, OnnxModule, to_torch

__all__ = ["SUPPORTED_OPS", "OnnxModule", "to_torch"]
