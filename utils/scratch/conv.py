"""Convolution, pooling and transposed convolution written by hand (chapter 06).

Chapter 06 builds every function here from its definition and checks it against PyTorch:

* :func:`conv2d_loops`: the definition of a 2-D convolution layer (a cross-correlation, as in every
  deep-learning library), one output value at a time: slow, for reading and for tiny inputs;
* :func:`im2col` / :func:`col2im`: cut an image into its sliding patches (the columns of a matrix)
  and add such columns back into an image; they match ``F.unfold`` and ``F.fold``;
* :func:`conv2d_im2col` (alias :func:`conv2d`): the same layer as one matrix product on the patches;
* :func:`maxpool2d_forward` / :func:`maxpool2d_backward`, :func:`avgpool2d_forward` /
  :func:`avgpool2d_backward` and :func:`global_avg_pool2d`;
* :func:`conv_transpose2d`: the transposed convolution, ``col2im`` of a matrix product;
* the arithmetic of a layer: :func:`conv_output_size`, :func:`conv_transpose_output_size`,
  :func:`conv2d_num_params` and :func:`conv2d_flops`.

Shapes: N is the batch, C (or C_in) the input channels, C_out the output channels, (H, W) the
input size, (kh, kw) the kernel size, (H_out, W_out) the output size and L = H_out * W_out the
number of sliding positions. ``stride``, ``padding`` and ``dilation`` are an int or a pair
(height, width), as in ``torch.nn.functional``. Weights follow PyTorch's layout: ``conv2d`` takes
``w`` of shape (C_out, C_in / groups, kh, kw), ``conv_transpose2d`` takes (C_in, C_out / groups, kh, kw).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

IntOrPair = Union[int, Sequence[int]]

__all__ = [
    "avgpool2d_backward",
    "avgpool2d_forward",
    "col2im",
    "conv2d",
    "conv2d_flops",
    "conv2d_im2col",
    "conv2d_loops",
    "conv2d_num_params",
    "conv_output_size",
    "conv_transpose2d",
    "conv_transpose_output_size",
    "global_avg_pool2d",
    "im2col",
    "maxpool2d_backward",
    "maxpool2d_forward",
]


# ---- argument checks ---------------------------------------------------------------------------


def _pair(value: IntOrPair, name: str, fn: str, *, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``; an error naming ``fn`` and ``name`` otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{fn} expects {name} to be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{fn} expects {name} to be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{fn} expects {name} >= {minimum}, got {value!r}")
    return pair


def _require_4d(name: str, value, fn: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn} expects {name} to be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 4:
        raise ValueError(f"{fn} expects {name} of shape (N, C, H, W), got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point {name}, got {value.dtype}")


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _checked_out_size(
    hw: tuple[int, int],
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
    fn: str,
) -> tuple[int, int]:
    out = tuple(_out_size(n, k_, s_, p_, d_) for n, k_, s_, p_, d_ in zip(hw, k, s, p, d))
    if min(out) < 1:
        raise ValueError(
            f"{fn}: the (dilated) kernel {tuple(d_ * (k_ - 1) + 1 for k_, d_ in zip(k, d))} does not fit "
            "into the "
            f"padded input {tuple(n + 2 * p_ for n, p_ in zip(hw, p))} (input {hw}, padding {p})"
        )
    return out  # type: ignore[return-value]


# ---- the arithmetic of a layer -----------------------------------------------------------------


def conv_output_size(n: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output size of a convolution or pooling along one axis (chapter 06).

    ``floor((n + 2 p - d (k - 1) - 1) / s) + 1``: a kernel of size ``k`` dilated by ``d`` covers
    ``d (k - 1) + 1`` pixels, and it fits ``floor(...) + 1`` times into the padded input of
    ``n + 2 p`` pixels when moved by ``s`` pixels at a time.
    """
    for name, value, minimum in (
        ("n", n, 1),
        ("k", k, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"conv_output_size expects {name} to be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"conv_output_size expects {name} >= {minimum}, got {value}")
    out = _out_size(n, k, stride, padding, dilation)
    if out < 1:
        raise ValueError(
            f"conv_output_size: the dilated kernel ({dilation * (k - 1) + 1} pixels) is larger than "
            f"the padded input ({n + 2 * padding} pixels)"
        )
    return out


def conv_transpose_output_size(
    n: int, k: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Output size of a transposed convolution along one axis (chapter 06).

    ``(n - 1) s - 2 p + d (k - 1) + output_padding + 1``: the input size of the convolution whose
    gradient it computes (``output_padding`` picks one of the ``s`` sizes that all give ``n``).
    """
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(
            f"output_padding must be in [0, max(stride, dilation)) = [0, {max(stride, dilation)}), got "
            f"{output_padding}"
        )
    out = (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"conv_transpose_output_size: the padding {padding} crops away the whole output")
    return out


def conv2d_num_params(
    c_in: int, c_out: int, kernel_size: IntOrPair, groups: int = 1, bias: bool = True
) -> int:
    """Number of parameters of ``nn.Conv2d(c_in, c_out, kernel_size, groups=groups, bias=bias)`` (chapter 06).

    Each of the ``c_out`` filters sees ``c_in / groups`` channels through a ``kh x kw`` window:
    ``c_out * (c_in / groups) * kh * kw`` weights, plus ``c_out`` biases.
    """
    kh, kw = _pair(kernel_size, "kernel_size", "conv2d_num_params", minimum=1)
    if c_in % groups or c_out % groups:
        raise ValueError(f"conv2d_num_params: groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return c_out * (c_in // groups) * kh * kw + (c_out if bias else 0)


def conv2d_flops(
    c_in: int, c_out: int, kernel_size: IntOrPair, out_size: IntOrPair, groups: int = 1, batch: int = 1
) -> int:
    """Floating-point operations of a convolution's forward pass, counting a multiply-add as 2 (chapter 06).

    Each of the ``batch * c_out * H_out * W_out`` outputs is a dot product of length
    ``(c_in / groups) * kh * kw``. This is the count of ``torch.utils.flop_counter`` (biases are
    not counted).
    """
    kh, kw = _pair(kernel_size, "kernel_size", "conv2d_flops", minimum=1)
    ho, wo = _pair(out_size, "out_size", "conv2d_flops", minimum=1)
    if c_in % groups or c_out % groups:
        raise ValueError(f"conv2d_flops: groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return 2 * batch * c_out * ho * wo * (c_in // groups) * kh * kw


# ---- convolution by its definition ---------------------------------------------------------------


def _check_conv_args(x, w, b, groups: int, fn: str) -> None:
    _require_4d("x", x, fn)
    _require_4d("w", w, fn)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{fn} expects groups to be a positive int, got {groups!r}")
    c_in, c_out = x.shape[1], w.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"{fn}: groups={groups} must divide the input channels ({c_in}) and the output channels ({c_out})"
        )
    if w.shape[1] != c_in // groups:
        raise ValueError(
            f"{fn} expects w of shape (C_out, C_in / groups, kh, kw) = ({c_out}, {c_in // groups}, ...) "
            f"for x with {c_in} channels and groups={groups}; got w {tuple(w.shape)}"
        )
    if b is not None and (not isinstance(b, torch.Tensor) or b.shape != (c_out,)):
        raise ValueError(
            f"{fn} expects b of shape (C_out,) = ({c_out},) or None, got "
            f"{tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}"
        )


def conv2d_loops(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """A 2-D convolution layer written with loops, one output value at a time (chapter 06).

    ``out[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * x_pad[n, g*C_g + c, i*s + u*d, j*s + v*d]``
    where ``g = o // (C_out / groups)`` is the group of filter ``o`` and ``C_g = C_in / groups``.
    Matches ``F.conv2d``; only for tiny inputs (four Python loops).

    x: (N, C_in, H, W), w: (C_out, C_in / groups, kh, kw), b: (C_out,) or None -> (N, C_out, H_out, W_out)
    """
    fn = "conv2d_loops"
    _check_conv_args(x, w, b, groups, fn)
    (sh, sw), (ph, pw), (dh, dw) = (
        _pair(v, n, fn, minimum=m)
        for v, n, m in ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1))
    )
    n_batch, c_in, h, width = x.shape
    c_out, c_g, kh, kw = w.shape
    ho, wo = _checked_out_size((h, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw), fn)
    x_pad = torch.zeros(n_batch, c_in, h + 2 * ph, width + 2 * pw, dtype=x.dtype, device=x.device)
    x_pad[:, :, ph : ph + h, pw : pw + width] = x  # zero padding around the image
    out = torch.zeros(n_batch, c_out, ho, wo, dtype=x.dtype, device=x.device)
    per_group = c_out // groups
    for n in range(n_batch):
        for o in range(c_out):
            g = o // per_group  # the group of this filter: it sees input channels g*C_g ... (g+1)*C_g - 1
            for i in range(ho):
                for j in range(wo):
                    top, left = i * sh, j * sw
                    patch = x_pad[
                        n,
                        g * c_g : (g + 1) * c_g,
                        top : top + dh * (kh - 1) + 1 : dh,
                        left : left + dw * (kw - 1) + 1 : dw,
                    ]  # (C_g, kh, kw)
                    out[n, o, i, j] = (patch * w[o]).sum()
            if b is not None:
                out[n, o] += b[o]
    return out


# ---- im2col and col2im -------------------------------------------------------------------------


def im2col(
    x: torch.Tensor,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Cut ``x`` into its sliding patches, one patch per column (chapter 06). Matches ``F.unfold``.

    Row ``c * kh * kw + u * kw + v`` of column ``l = i * W_out + j`` holds the pixel of channel ``c``
    at offset ``(u, v)`` of the window of output position ``(i, j)``. ``pad_value`` fills the padding
    (0 for convolution, ``-inf`` for max pooling). The loop runs over the ``kh * kw`` kernel offsets,
    each one a strided slice of the padded image.

    x: (N, C, H, W) -> (N, C * kh * kw, L) with L = H_out * W_out
    """
    fn = "im2col"
    _require_4d("x", x, fn)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        _pair(v, n, fn, minimum=m)
        for v, n, m in (
            (kernel_size, "kernel_size", 1),
            (stride, "stride", 1),
            (padding, "padding", 0),
            (dilation, "dilation", 1),
        )
    )
    n_batch, c, h, width = x.shape
    ho, wo = _checked_out_size((h, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw), fn)
    x_pad = x.new_full((n_batch, c, h + 2 * ph, width + 2 * pw), pad_value)
    x_pad[:, :, ph : ph + h, pw : pw + width] = x
    cols = x.new_empty(n_batch, c, kh, kw, ho, wo)
    for u in range(kh):
        for v in range(kw):
            top, left = u * dh, v * dw  # offset (u, v) of the kernel, in pixels of the padded input
            cols[:, :, u, v] = x_pad[
                :, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw
            ]  # (N, C, H_out, W_out)
    return cols.reshape(n_batch, c * kh * kw, ho * wo)


def _add_patches(
    cols: torch.Tensor, size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> torch.Tensor:
    """Add the patches ``cols`` (N, C, kh, kw, H_out, W_out) into zeros of ``size``, top-left aligned."""
    n_batch, c, kh, kw, ho, wo = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    image = cols.new_zeros(n_batch, c, *size)
    for u in range(kh):
        for v in range(kw):
            top, left = u * dh, v * dw  # offset (u, v) of the kernel, in pixels
            image[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw] += cols[
                :, :, u, v
            ]
    return image


def col2im(
    cols: torch.Tensor,
    output_size: IntOrPair,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> torch.Tensor:
    """Add every column back at the place of its patch, summing where patches overlap (chapter 06).

    The adjoint (transpose) of :func:`im2col`; matches ``F.fold``. The backward pass of
    :func:`im2col`, of pooling and the transposed convolution are built on it.

    cols: (N, C * kh * kw, L) -> (N, C, H, W) with (H, W) = ``output_size``
    """
    fn = "col2im"
    if not isinstance(cols, torch.Tensor) or cols.ndim != 3:
        raise ValueError(
            f"{fn} expects cols of shape (N, C * kh * kw, L), got "
            f"{tuple(cols.shape) if isinstance(cols, torch.Tensor) else type(cols).__name__}"
        )
    (h, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        _pair(v, n, fn, minimum=m)
        for v, n, m in (
            (output_size, "output_size", 1),
            (kernel_size, "kernel_size", 1),
            (stride, "stride", 1),
            (padding, "padding", 0),
            (dilation, "dilation", 1),
        )
    )
    n_batch, ckk, length = cols.shape
    ho, wo = _checked_out_size((h, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw), fn)
    if ckk % (kh * kw) or length != ho * wo:
        raise ValueError(
            f"{fn}: cols of shape {tuple(cols.shape)} do not fit output_size {(h, width)} with kernel "
            f"{(kh, kw)}: expected (N, C * {kh * kw}, {ho * wo})"
        )
    c = ckk // (kh * kw)
    x_pad = _add_patches(
        cols.reshape(n_batch, c, kh, kw, ho, wo), (h + 2 * ph, width + 2 * pw), (sh, sw), (dh, dw)
    )
    return x_pad[:, :, ph : ph + h, pw : pw + width]  # the padding is cut away


# ---- convolution as a matrix product ------------------------------------------------------------


def conv2d_im2col(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """A 2-D convolution layer as im2col and one (batched) matrix product (chapter 06). Matches ``F.conv2d``.

    Every output pixel is the dot product of a filter with one patch, so all of them together are
    the product of the (C_out, C_in * kh * kw) matrix of filters with the (C_in * kh * kw, L) matrix
    of patches. With groups, each group of filters multiplies its own slice of the patch rows.

    x: (N, C_in, H, W), w: (C_out, C_in / groups, kh, kw), b: (C_out,) or None -> (N, C_out, H_out, W_out)
    """
    fn = "conv2d_im2col"
    _check_conv_args(x, w, b, groups, fn)
    (sh, sw), (ph, pw), (dh, dw) = (
        _pair(v, n, fn, minimum=m)
        for v, n, m in ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1))
    )
    n_batch, c_in, h, width = x.shape
    c_out, c_g, kh, kw = w.shape
    ho, wo = _checked_out_size((h, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw), fn)
    cols = im2col(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw))  # (N, C_in * kh * kw, L)
    cols = cols.reshape(
        n_batch, groups, c_g * kh * kw, ho * wo
    )  # (N, G, C_g * kh * kw, L): rows are channel-major
    filters = w.reshape(groups, c_out // groups, c_g * kh * kw)  # (G, C_out / G, C_g * kh * kw)
    out = filters @ cols  # (G, C_out/G, K) @ (N, G, K, L) -> (N, G, C_out / G, L)
    out = out.reshape(n_batch, c_out, ho, wo)
    if b is not None:
        out = out + b.reshape(1, c_out, 1, 1)
    return out


conv2d = conv2d_im2col


# ---- pooling -----------------------------------------------------------------------------------


def _pool_args(x, kernel_size, stride, padding, fn: str):
    _require_4d("x", x, fn)
    k = _pair(kernel_size, "kernel_size", fn, minimum=1)
    s = k if stride is None else _pair(stride, "stride", fn, minimum=1)  # default stride: the kernel size
    p = _pair(padding, "padding", fn, minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{fn} expects padding at most half the kernel size {k}, got {p} (as PyTorch's pooling does)"
        )
    out = _checked_out_size(tuple(x.shape[2:]), k, s, p, (1, 1), fn)
    return k, s, p, out


def maxpool2d_forward(
    x: torch.Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> torch.Tensor:
    """Max pooling: the largest value of every window, channel by channel (chapter 06). Matches
    ``F.max_pool2d``.

    ``stride`` defaults to ``kernel_size`` (windows side by side); the padding never wins the max.

    x: (N, C, H, W) -> (N, C, H_out, W_out)
    """
    k, s, p, (ho, wo) = _pool_args(x, kernel_size, stride, padding, "maxpool2d_forward")
    n_batch, c = x.shape[:2]
    cols = im2col(x, k, s, p, pad_value=float("-inf")).reshape(
        n_batch, c, k[0] * k[1], ho * wo
    )  # (N, C, kh*kw, L)
    return cols.max(dim=2).values.reshape(n_batch, c, ho, wo)


def maxpool2d_backward(
    dout: torch.Tensor,
    x: torch.Tensor,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> torch.Tensor:
    """Gradient of max pooling with respect to its input (chapter 06). Matches autograd of ``F.max_pool2d``.

    Each output's gradient goes to the one input that won its window (the first maximum in
    row-major order when several tie, as in PyTorch) and to no other; where windows overlap
    (stride < kernel), an input that wins several windows collects the sum of their gradients.

    dout: (N, C, H_out, W_out), x: (N, C, H, W) -> dx: (N, C, H, W)
    """
    fn = "maxpool2d_backward"
    k, s, p, (ho, wo) = _pool_args(x, kernel_size, stride, padding, fn)
    n_batch, c, h, width = x.shape
    if not isinstance(dout, torch.Tensor) or dout.shape != (n_batch, c, ho, wo):
        raise ValueError(
            f"{fn} expects dout of the output's shape {(n_batch, c, ho, wo)}, got "
            f"{tuple(dout.shape) if isinstance(dout, torch.Tensor) else type(dout).__name__}"
        )
    cols = im2col(x, k, s, p, pad_value=float("-inf")).reshape(n_batch, c, k[0] * k[1], ho * wo)
    winner = cols.argmax(dim=2, keepdim=True)  # (N, C, 1, L): the first maximum of every window
    dcols = torch.zeros_like(cols)
    dcols.scatter_(2, winner, dout.reshape(n_batch, c, 1, ho * wo))  # the gradient goes to the winner only
    return col2im(dcols.reshape(n_batch, c * k[0] * k[1], ho * wo), (h, width), k, s, p)


def avgpool2d_forward(
    x: torch.Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> torch.Tensor:
    """Average pooling: the mean of every window, zero padding included in the count (chapter 06).

    Matches ``F.avg_pool2d`` (with its default ``count_include_pad=True``).

    x: (N, C, H, W) -> (N, C, H_out, W_out)
    """
    k, s, p, (ho, wo) = _pool_args(x, kernel_size, stride, padding, "avgpool2d_forward")
    n_batch, c = x.shape[:2]
    cols = im2col(x, k, s, p).reshape(n_batch, c, k[0] * k[1], ho * wo)
    return cols.mean(dim=2).reshape(n_batch, c, ho, wo)


def avgpool2d_backward(
    dout: torch.Tensor,
    x: torch.Tensor,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> torch.Tensor:
    """Gradient of :func:`avgpool2d_forward`: each output spreads ``dout / (kh * kw)`` over its window
    (chapter 06).

    dout: (N, C, H_out, W_out), x: (N, C, H, W) -> dx: (N, C, H, W)
    """
    fn = "avgpool2d_backward"
    k, s, p, (ho, wo) = _pool_args(x, kernel_size, stride, padding, fn)
    n_batch, c, h, width = x.shape
    if not isinstance(dout, torch.Tensor) or dout.shape != (n_batch, c, ho, wo):
        raise ValueError(
            f"{fn} expects dout of the output's shape {(n_batch, c, ho, wo)}, got "
            f"{tuple(dout.shape) if isinstance(dout, torch.Tensor) else type(dout).__name__}"
        )
    dcols = (dout.reshape(n_batch, c, 1, ho * wo) / (k[0] * k[1])).expand(n_batch, c, k[0] * k[1], ho * wo)
    return col2im(dcols.reshape(n_batch, c * k[0] * k[1], ho * wo), (h, width), k, s, p)


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling: the mean of each channel over all positions (chapter 06).

    Matches ``F.adaptive_avg_pool2d(x, 1).flatten(1)``. x: (N, C, H, W) -> (N, C)
    """
    _require_4d("x", x, "global_avg_pool2d")
    return x.mean(dim=(2, 3))


# ---- transposed convolution --------------------------------------------------------------------


def conv_transpose2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> torch.Tensor:
    """Transposed convolution (chapter 06). Matches ``F.conv_transpose2d`` (same argument order).

    Every input pixel scatters a copy of the kernel, scaled by its value, into the output, at
    ``stride`` times its position; overlapping copies add up. As matrices: the columns
    ``W^T x`` (one kernel-sized patch per input pixel) are added into the image as :func:`col2im`
    does, then the padding is cropped (and ``output_padding`` rows and columns kept at the end).
    It is the gradient of ``conv2d`` with respect to its input, which is why it maps the
    convolution's output size back to its input size.

    x: (N, C_in, H, W), w: (C_in, C_out / groups, kh, kw), b: (C_out,) or None -> (N, C_out, H_out, W_out)
    with ``H_out = (H - 1) s - 2 p + d (kh - 1) + output_padding + 1``.
    """
    fn = "conv_transpose2d"
    _require_4d("x", x, fn)
    _require_4d("w", w, fn)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{fn} expects groups to be a positive int, got {groups!r}")
    n_batch, c_in, h, width = x.shape
    if w.shape[0] != c_in or c_in % groups:
        raise ValueError(
            f"{fn} expects w of shape (C_in, C_out / groups, kh, kw) with C_in = {c_in} divisible by "
            f"groups={groups}; got w {tuple(w.shape)}"
        )
    c_og, kh, kw = w.shape[1:]
    c_out = c_og * groups
    if b is not None and (not isinstance(b, torch.Tensor) or b.shape != (c_out,)):
        raise ValueError(f"{fn} expects b of shape (C_out,) = ({c_out},) or None")
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (
        _pair(v, n, fn, minimum=m)
        for v, n, m in (
            (stride, "stride", 1),
            (padding, "padding", 0),
            (output_padding, "output_padding", 0),
            (dilation, "dilation", 1),
        )
    )
    out_hw = (
        conv_transpose_output_size(h, kh, sh, ph, oph, dh),
        conv_transpose_output_size(width, kw, sw, pw, opw, dw),
    )
    c_ig = c_in // groups
    xg = x.reshape(n_batch, groups, c_ig, h * width)  # (N, G, C_in/G, L): L input pixels
    wg = w.reshape(groups, c_ig, c_og * kh * kw)  # (G, C_in/G, C_out/G * kh * kw)
    cols = wg.transpose(1, 2) @ xg  # (G, K, C_in/G) @ (N, G, C_in/G, L) -> (N, G, C_out/G * kh * kw, L)
    cols = cols.reshape(n_batch, c_out, kh, kw, h, width)  # groups in order: output channel g * C_out/G + c
    # Every input pixel (i, j) adds its patch at (i * s, j * s) of the uncropped output; the padding
    # p of the convolution is then cut away, and output_padding keeps extra rows at the end.
    full = ((h - 1) * sh + dh * (kh - 1) + 1, (width - 1) * sw + dw * (kw - 1) + 1)
    size = (max(full[0], ph + out_hw[0]), max(full[1], pw + out_hw[1]))
    out = _add_patches(cols, size, (sh, sw), (dh, dw))[:, :, ph : ph + out_hw[0], pw : pw + out_hw[1]]
    if b is not None:
        out = out + b.reshape(1, c_out, 1, 1)
    return out
