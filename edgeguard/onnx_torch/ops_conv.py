"""Convolutions, normalisations, pools and resizing ops of the interpreter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgeguard.onnx_torch.registry import (
    ints,
    norm_axis,
    onnx_op,
)

__all__ = ["torch_pads"]  # the ops register themselves in registry.OPS

# -------------------------------------------------------------- conv, norm, pools

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
_CONV_ATTRS = {
    "auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
    "pads": None, "strides": None,
}  # fmt: skip
_POOL_ATTRS = {
    "auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None,
    "pads": None, "strides": None,
}  # fmt: skip


def _spatial(n, key, count, default):
    value = n.attrs[key]
    return [default] * count if value is None else list(value)


def _same_pads(sizes, kernel, strides, dilations, upper):
    heads, tails = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        heads.append(small if upper else big)
        tails.append(big if upper else small)
    return heads, tails


def _pads(n, sizes, kernel, strides, dilations):
    """(heads, tails) explicit pads of the spatial dims, resolving auto_pad."""
    auto = n.attrs["auto_pad"]
    if auto.startswith("SAME"):
        return _same_pads(sizes, kernel, strides, dilations, auto == "SAME_UPPER")
    pads = _spatial(n, "pads", 2 * len(sizes), 0)
    if auto == "VALID":
        pads = [0] * (2 * len(sizes))
    return pads[: len(sizes)], pads[len(sizes) :]


def torch_pads(heads, tails):
    """ONNX (heads, tails) of the trailing dims -> F.pad's last-dim-first layout."""
    out: list[int] = []
    for h, t in zip(reversed(heads), reversed(tails)):
        out += [h, t]
    return out


def _by_rank(n, dims, *fns):
    """The 1d/2d/3d variant of a torch function (runtime guard for weights computed in-graph)."""
    if not 1 <= dims <= len(fns):
        raise n.fail("1 to 3 spatial dimensions", f"{dims}")
    return fns[dims - 1]


def _check_spatial(n):
    kernel = n.attrs["kernel_shape"]
    if kernel is not None and not 1 <= len(kernel) <= 3:
        raise n.fail("1 to 3 spatial dimensions", f"{len(kernel)}")


def _check_conv(n):
    _check_spatial(n)
    if n.attrs["auto_pad"] not in _AUTO_PADS:
        raise n.fail(f"auto_pad one of {_AUTO_PADS}", repr(n.attrs["auto_pad"]))


@onnx_op("Conv", attrs=_CONV_ATTRS, check=_check_conv)
def _conv(n, x, w, b=None):
    dims = w.dim() - 2
    strides = _spatial(n, "strides", dims, 1)
    dilations = _spatial(n, "dilations", dims, 1)
    heads, tails = _pads(n, x.shape[2:], w.shape[2:], strides, dilations)
    padding = heads
    if heads != tails:
        x, padding = F.pad(x, torch_pads(heads, tails)), [0] * dims
    conv = _by_rank(n, dims, F.conv1d, F.conv2d, F.conv3d)
    return conv(x, w, b, strides, padding, dilations, n.attrs["group"])


def _check_conv_transpose(n):
    _check_spatial(n)
    if n.attrs["auto_pad"] not in ("NOTSET", "VALID"):
        raise n.fail("ConvTranspose auto_pad 'NOTSET' or 'VALID'", repr(n.attrs["auto_pad"]))


@onnx_op(
    "ConvTranspose",
    attrs={**_CONV_ATTRS, "output_padding": None},
    check=_check_conv_transpose,
)
def _conv_transpose(n, x, w, b=None):
    dims = w.dim() - 2
    strides = _spatial(n, "strides", dims, 1)
    dilations = _spatial(n, "dilations", dims, 1)
    out_pad = _spatial(n, "output_padding", dims, 0)
    heads, tails = _pads(n, [0] * dims, w.shape[2:], strides, dilations)  # NOTSET / VALID only
    conv = _by_rank(n, dims, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    y = conv(x, w, b, strides, 0, out_pad, n.attrs["group"], dilations)
    for i, (h, t) in enumerate(zip(heads, tails)):  # ONNX pads crop the full output
        y = y.narrow(2 + i, h, y.shape[2 + i] - h - t)
    return y


def _check_batch_norm(n):
    if n.attrs["training_mode"] != 0 or len(n.outputs) > 1:
        raise n.fail(
            "BatchNormalization in inference mode (training_mode=0, 1 output)",
            f"training_mode={n.attrs['training_mode']} with {len(n.outputs)} outputs; export the model in eval mode",
        )


@onnx_op(
    "BatchNormalization",
    attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0},
    nondiff=(3, 4),
    check=_check_batch_norm,
)
def _batch_norm(n, x, scale, bias, mean, var):
    mean, var = mean.detach().to(x.dtype), var.detach().to(x.dtype)
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, n.attrs["epsilon"])


def _check_pool(n):
    _check_conv(n)
    if n.attrs["kernel_shape"] is None:
        raise n.fail("a kernel_shape attribute", "none")
    if n.attrs["ceil_mode"] and n.attrs["auto_pad"] != "NOTSET":
        raise n.fail("ceil_mode=0 when auto_pad is set", f"auto_pad={n.attrs['auto_pad']!r}")
    if len(n.outputs) > 1:
        raise n.fail("MaxPool with 1 output", "an Indices output")


def _pool_geometry(n, sizes):
    """kernel, strides, dilations, explicit pads (heads, tails), the extra tail needed
    for ceil-mode windows to fit, and the output sizes, per the ONNX spec."""
    kernel = list(n.attrs["kernel_shape"])
    strides = _spatial(n, "strides", len(kernel), 1)
    dilations = _spatial(n, "dilations", len(kernel), 1)
    heads, tails = _pads(n, sizes, kernel, strides, dilations)
    outs, extras = [], []
    for size, k, s, d, h, t in zip(sizes, kernel, strides, dilations, heads, tails):
        span = size + h + t - (k - 1) * d - 1
        out = (-(-span // s) if n.attrs["ceil_mode"] else span // s) + 1
        if n.attrs["ceil_mode"] and (out - 1) * s >= size + h:
            out -= 1  # windows starting in the right padding are dropped
        outs.append(out)
        extras.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size - h - t))
    return kernel, strides, dilations, heads, tails, extras, outs


def _crop(y, outs):
    for i, o in enumerate(outs):
        y = y.narrow(2 + i, 0, o)
    return y


@onnx_op("MaxPool", attrs={**_POOL_ATTRS, "storage_order": 0}, check=_check_pool)
def _max_pool(n, x):
    kernel, strides, dilations, heads, tails, extras, outs = _pool_geometry(n, x.shape[2:])
    tails = [t + e for t, e in zip(tails, extras)]
    x = F.pad(x, torch_pads(heads, tails), value=-math.inf)
    pool = _by_rank(n, len(kernel), F.max_pool1d, F.max_pool2d, F.max_pool3d)
    return _crop(pool(x, kernel, strides, 0, dilations), outs)


@onnx_op("AveragePool", attrs={**_POOL_ATTRS, "count_include_pad": 0}, check=_check_pool)
def _average_pool(n, x):
    """Window sums / window element counts, both by convolution with a ones kernel."""
    sizes = list(x.shape[2:])
    kernel, strides, dilations, heads, tails, extras, outs = _pool_geometry(n, sizes)
    dims = len(kernel)
    conv = _by_rank(n, dims, F.conv1d, F.conv2d, F.conv3d)
    ones = torch.ones([1, 1, *kernel], dtype=x.dtype, device=x.device)
    all_tails = [t + e for t, e in zip(tails, extras)]
    flat = F.pad(x.reshape(-1, 1, *sizes), torch_pads(heads, all_tails))
    sums = conv(flat, ones, None, strides, 0, dilations)
    # counted: the real elements, the explicit pads if count_include_pad, never the
    # extra tail that only exists so that ceil-mode windows fit
    mask = torch.ones([1, 1, *sizes], dtype=x.dtype, device=x.device)
    mask = F.pad(mask, torch_pads(heads, tails), value=float(n.attrs["count_include_pad"]))
    mask = F.pad(mask, torch_pads([0] * dims, extras))
    counts = conv(mask, ones, None, strides, 0, dilations)
    y = _crop(sums / counts, outs)
    return y.reshape(*x.shape[:2], *y.shape[2:])


@onnx_op("GlobalAveragePool")
def _global_average_pool(n, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)



def _check_layer_norm(n):
    if n.attrs["stash_type"] != 1:
        raise n.fail("LayerNormalization stash_type 1 (float)", repr(n.attrs["stash_type"]))


@onnx_op("LayerNormalization", attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1}, check=_check_layer_norm)
def _layer_norm(n, x, scale, bias=None):
    axis = norm_axis(n.attrs["axis"], x.dim())
    dims = list(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + n.attrs["epsilon"]) * scale
    return y + bias if bias is not None else y


@onnx_op("InstanceNormalization", attrs={"epsilon": 1e-5})
def _instance_norm(n, x, scale, bias):
    dims = list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + n.attrs["epsilon"]) * scale.reshape(shape) + bias.reshape(shape)


def _check_depth_to_space(n):
    if n.attrs["mode"] not in ("DCR", "CRD"):
        raise n.fail("DepthToSpace mode DCR or CRD", repr(n.attrs["mode"]))


@onnx_op("DepthToSpace", attrs={"blocksize": None, "mode": "DCR"}, check=_check_depth_to_space)
def _depth_to_space(n, x):
    b, c, h, w = x.shape
    k = n.attrs["blocksize"]
    if n.attrs["mode"] == "DCR":
        y = x.reshape(b, k, k, c // (k * k), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(b, c // (k * k), k, k, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // (k * k), h * k, w * k)


_RESIZE_SUPPORTED = {
    ("nearest", "asymmetric", "floor"),
    ("linear", "half_pixel", None),
    ("linear", "pytorch_half_pixel", None),
    ("linear", "align_corners", None),
}


def _check_resize(n):
    mode, transform = n.attrs["mode"], n.attrs["coordinate_transformation_mode"]
    key = (mode, transform, n.attrs["nearest_mode"] if mode == "nearest" else None)
    if key not in _RESIZE_SUPPORTED or n.attrs["antialias"] or n.attrs["exclude_outside"]:
        raise n.fail(
            "Resize nearest (asymmetric, floor) or linear (half_pixel, pytorch_half_pixel, align_corners), "
            "no antialias", f"mode {mode!r}, coordinate_transformation_mode {transform!r}"
        )
    if n.attrs["keep_aspect_ratio_policy"] != "stretch":
        raise n.fail("Resize keep_aspect_ratio_policy 'stretch'", repr(n.attrs["keep_aspect_ratio_policy"]))


@onnx_op(
    "Resize",
    attrs={
        "mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_floor",
        "cubic_coeff_a": -0.75, "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0, "axes": None,
        "keep_aspect_ratio_policy": "stretch",
    },
    nondiff=(1, 2, 3),
    check=_check_resize,
)  # fmt: skip
def _resize(n, x, roi=None, scales=None, sizes=None):
    """Spatial Resize of an (N, C, ...) tensor, as nn.Upsample / F.interpolate export it."""
    if n.attrs["axes"] is not None:
        raise n.fail("Resize without the axes attribute", repr(n.attrs["axes"]))
    spatial = x.dim() - 2
    if sizes is not None and sizes.numel():
        size = ints(sizes)[-spatial:]
        factors = None
    else:
        values = [float(v) for v in scales.reshape(-1).tolist()]
        if values[:2] != [1.0, 1.0]:
            raise n.fail("Resize scales of 1 on the batch and channel axes", repr(values[:2]))
        size, factors = None, values[2:]
    if n.attrs["mode"] == "nearest":
        if factors is not None:
            size = [int(math.floor(d * f)) for d, f in zip(x.shape[2:], factors)]
        return F.interpolate(x, size=size, mode="nearest")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
    align = n.attrs["coordinate_transformation_mode"] == "align_corners"
    if factors is not None:
        return F.interpolate(x, scale_factor=factors, mode=mode, align_corners=align, recompute_scale_factor=False)
    return F.interpolate(x, size=size, mode=mode, align_corners=align)
