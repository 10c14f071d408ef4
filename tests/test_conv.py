"""utils.scratch.conv and the kernel widget (chapter 06): every hand-written convolution, pooling and
transposed convolution agrees with torch.nn.functional (forward) and autograd (backward), including
stride, padding, dilation, groups and bias; bad input fails with a clear message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from utils.scratch import conv
from utils.scratch.conv import (
    avgpool2d_backward,
    avgpool2d_forward,
    col2im,
    conv2d,
    conv2d_flops,
    conv2d_im2col,
    conv2d_loops,
    conv2d_num_params,
    conv_output_size,
    conv_transpose2d,
    conv_transpose_output_size,
    global_avg_pool2d,
    im2col,
    maxpool2d_backward,
    maxpool2d_forward,
)

F64 = torch.float64


# (C_in, C_out, H, W, kernel, stride, padding, dilation, groups, bias)
CONV_CONFIGS = [
    (1, 1, 6, 6, 3, 1, 0, 1, 1, True),
    (3, 4, 7, 7, 3, 1, 1, 1, 1, True),
    (2, 3, 8, 9, 3, 2, 0, 1, 1, False),
    (2, 2, 9, 9, 5, 2, 2, 1, 1, True),
    (4, 6, 9, 8, 3, 1, 2, 2, 2, True),  # dilation and groups
    (4, 4, 7, 7, 3, 1, 1, 1, 4, True),  # depthwise
    (6, 3, 5, 5, 1, 1, 0, 1, 3, True),  # grouped 1x1
    (2, 3, 7, 10, (2, 3), (1, 2), (0, 1), (2, 1), 1, True),  # non-square everything
    (3, 2, 4, 4, 6, 1, 1, 1, 1, True),  # kernel as large as the padded input
]


def _conv_inputs(c_in, c_out, h, w, k, groups, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, c_in, h, w, generator=g, dtype=F64)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=F64)
    b = torch.randn(c_out, generator=g, dtype=F64) if bias else None
    return x, weight, b


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("impl", [conv2d_loops, conv2d_im2col])
def test_conv2d_matches_torch(config, impl):
    c_in, c_out, h, w, k, s, p, d, groups, bias = config
    x, weight, b = _conv_inputs(c_in, c_out, h, w, k, groups, bias)
    expected = F.conv2d(x, weight, b, stride=s, padding=p, dilation=d, groups=groups)
    got = impl(x, weight, b, stride=s, padding=p, dilation=d, groups=groups)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_conv2d_alias_float32_and_autograd():
    x, weight, b = _conv_inputs(3, 4, 8, 8, 3, 1, True)
    x, weight, b = x.float(), weight.float(), b.float()
    assert conv2d is conv2d_im2col
    torch.testing.assert_close(conv2d(x, weight, b, 2, 1), F.conv2d(x, weight, b, 2, 1), atol=1e-5, rtol=1e-5)
    # built from differentiable operations: autograd through it gives torch's gradients
    xs, ws = x.double().requires_grad_(), weight.double().requires_grad_()
    conv2d(xs, ws, None, 1, 1).pow(2).sum().backward()
    xr, wr = x.double().requires_grad_(), weight.double().requires_grad_()
    F.conv2d(xr, wr, None, 1, 1).pow(2).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad)
    torch.testing.assert_close(ws.grad, wr.grad)


@pytest.mark.parametrize(
    "k, s, p, d", [(3, 1, 0, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2), ((2, 3), (2, 1), (1, 0), (1, 2))]
)
def test_im2col_and_col2im_match_unfold_and_fold(k, s, p, d):
    x = torch.randn(2, 3, 7, 8, dtype=F64)
    cols = im2col(x, k, s, p, d)
    torch.testing.assert_close(cols, F.unfold(x, k, dilation=d, padding=p, stride=s), atol=0, rtol=0)
    back = torch.randn_like(cols)
    torch.testing.assert_close(
        col2im(back, (7, 8), k, s, p, d), F.fold(back, (7, 8), k, dilation=d, padding=p, stride=s)
    )


def test_col2im_is_the_adjoint_of_im2col():
    x = torch.randn(1, 2, 6, 6, dtype=F64)
    y = torch.randn(1, 2 * 9, 9, dtype=F64)  # 3x3 kernel, stride 2, padding 1 on 6x6 -> 3x3 positions
    lhs = (im2col(x, 3, 2, 1) * y).sum()
    rhs = (x * col2im(y, (6, 6), 3, 2, 1)).sum()
    assert abs(lhs - rhs) < 1e-10


# ---- pooling -----------------------------------------------------------------------------------

POOL_CONFIGS = [(2, None, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 1)), (4, 4, 0)]


@pytest.mark.parametrize("k, s, p", POOL_CONFIGS)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_forward_and_backward_match_autograd(k, s, p, ties):
    g = torch.Generator().manual_seed(1)
    shape = (2, 3, 8, 9)
    x = (
        torch.randint(0, 3, shape, generator=g).to(F64)
        if ties
        else torch.randn(*shape, generator=g, dtype=F64)
    )
    xr = x.clone().requires_grad_()
    out = F.max_pool2d(xr, k, s, p)
    dout = torch.randn(out.shape, generator=g, dtype=F64)
    out.backward(dout)
    torch.testing.assert_close(maxpool2d_forward(x, k, s, p), out.detach(), atol=0, rtol=0)
    torch.testing.assert_close(maxpool2d_backward(dout, x, k, s, p), xr.grad, atol=1e-12, rtol=1e-12)


def test_maxpool_padding_never_wins_and_negative_inputs():
    x = -torch.rand(1, 1, 4, 4, dtype=F64) - 1  # all below -1
    torch.testing.assert_close(maxpool2d_forward(x, 3, 1, 1), F.max_pool2d(x, 3, 1, 1))
    assert (maxpool2d_forward(x, 3, 1, 1) < -1).all()


@pytest.mark.parametrize("k, s, p", POOL_CONFIGS)
def test_avgpool_forward_and_backward_match_autograd(k, s, p):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 9, generator=g, dtype=F64)
    xr = x.clone().requires_grad_()
    out = F.avg_pool2d(xr, k, s, p)
    dout = torch.randn(out.shape, generator=g, dtype=F64)
    out.backward(dout)
    torch.testing.assert_close(avgpool2d_forward(x, k, s, p), out.detach())
    torch.testing.assert_close(avgpool2d_backward(dout, x, k, s, p), xr.grad)


def test_global_avg_pool():
    x = torch.randn(3, 5, 6, 7, dtype=F64)
    torch.testing.assert_close(global_avg_pool2d(x), F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---- transposed convolution ----------------------------------------------------------------------

# (C_in, C_out, H, W, kernel, stride, padding, output_padding, dilation, groups, bias)
TRANSPOSE_CONFIGS = [
    (2, 3, 4, 4, 3, 1, 0, 0, 1, 1, True),
    (2, 3, 4, 5, 3, 2, 1, 1, 1, 1, True),
    (3, 2, 3, 3, 4, 2, 1, 0, 1, 1, False),
    (4, 6, 4, 4, 3, 2, 1, 1, 2, 2, True),  # dilation and groups
    (4, 4, 5, 5, 3, 3, 0, 2, 1, 4, True),  # depthwise, output_padding 2
    (2, 2, 4, 4, 3, 1, 2, 1, 2, 1, True),  # output_padding < dilation, padding crops
    (2, 3, 3, 4, (2, 3), (2, 1), (0, 1), (1, 0), (1, 2), 1, True),
]


@pytest.mark.parametrize("config", TRANSPOSE_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_conv_transpose2d_matches_torch(config):
    c_in, c_out, h, w, k, s, p, op, d, groups, bias = config
    g = torch.Generator().manual_seed(3)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, c_in, h, w, generator=g, dtype=F64)
    weight = torch.randn(c_in, c_out // groups, kh, kw, generator=g, dtype=F64)
    b = torch.randn(c_out, generator=g, dtype=F64) if bias else None
    expected = F.conv_transpose2d(
        x, weight, b, stride=s, padding=p, output_padding=op, groups=groups, dilation=d
    )
    got = conv_transpose2d(x, weight, b, stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_conv_transpose_is_the_gradient_of_conv():
    """conv_transpose2d(dout, w) is d(sum(conv2d(x, w) * dout)) / dx."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 9, 9, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=F64)
    out = F.conv2d(x, w, stride=2, padding=1)
    dout = torch.randn(out.shape, generator=g, dtype=F64)
    out.backward(dout)
    torch.testing.assert_close(conv_transpose2d(dout, w, stride=2, padding=1, output_padding=0), x.grad)


# ---- arithmetic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, k, s, p, d",
    [
        (28, 3, 1, 0, 1),
        (28, 3, 2, 0, 1),
        (17, 5, 3, 1, 1),
        (20, 3, 1, 0, 2),
        (33, 3, 2, 1, 4),
        (5, 7, 1, 1, 1),
        (224, 7, 2, 3, 1),
        (7, 1, 2, 0, 1),
    ],
)
def test_output_size_formulas_match_real_layers(n, k, s, p, d):
    out = nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, n, n))
    assert conv_output_size(n, k, s, p, d) == out.shape[-1]
    for op in range(max(s, d)):
        up = nn.ConvTranspose2d(1, 1, k, s, p, op, dilation=d)(torch.zeros(1, 1, n, n))
        assert conv_transpose_output_size(n, k, s, p, op, d) == up.shape[-1]


@pytest.mark.parametrize(
    "c_in, c_out, k, groups, bias",
    [
        (3, 16, 3, 1, True),
        (16, 32, 5, 1, False),
        (32, 32, 3, 32, True),
        (8, 12, (1, 3), 4, True),
        (64, 128, 1, 1, True),
    ],
)
def test_parameter_and_flop_counts_match_real_layers(c_in, c_out, k, groups, bias):
    layer = nn.Conv2d(c_in, c_out, k, groups=groups, bias=bias, padding=1)
    assert conv2d_num_params(c_in, c_out, k, groups, bias) == sum(p.numel() for p in layer.parameters())
    x = torch.zeros(2, c_in, 10, 12)
    with FlopCounterMode(display=False) as counter:
        out = layer(x)
    assert conv2d_flops(c_in, c_out, k, tuple(out.shape[2:]), groups, batch=2) == counter.get_total_flops()


# ---- errors ------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(ValueError, match=r"w of shape \(C_out, C_in / groups"):
        conv2d(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        conv2d_loops(x, torch.randn(3, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(x, torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        im2col(torch.randn(6, 6), 3)
    with pytest.raises(TypeError, match="floating-point"):
        maxpool2d_forward(torch.zeros(1, 1, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="stride >= 1"):
        conv2d(x, torch.randn(2, 4, 3, 3), stride=0)
    with pytest.raises(ValueError, match="at most half the kernel"):
        maxpool2d_forward(x, 2, 2, 2)
    with pytest.raises(ValueError, match="dout of the output's shape"):
        maxpool2d_backward(torch.zeros(1, 4, 2, 2), x, 2, 2)
    with pytest.raises(ValueError, match="kernel .* larger than the padded input"):
        conv_output_size(4, 7, 1, 1)
    with pytest.raises(TypeError, match="n to be an int"):
        conv_output_size(4.0, 3)
    with pytest.raises(ValueError, match="output_padding must be in"):
        conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3), stride=2, output_padding=2)
    assert "conv2d_loops" in conv.__all__


# ---- the widget ----------------------------------------------------------------------------------


def test_filter_image_is_a_per_channel_cross_correlation():
    from utils.widgets.convolutions import PRESETS, filter_image, to_display

    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 12, 10, generator=g)
    sobel = torch.tensor(PRESETS["Sobel x (vertical edges)"][0], dtype=torch.float32)
    out = filter_image(image, sobel)
    expected = torch.cat(
        [F.conv2d(image[c : c + 1][None], sobel[None, None], padding=1)[0] for c in range(3)]
    )
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(filter_image(image, PRESETS["identity"][0]), image)
    ramp = torch.arange(10.0).repeat(12, 1)  # brightness grows to the right: a vertical edge everywhere
    assert (filter_image(ramp, sobel)[1:-1, 1:-1] == 8).all()  # Sobel x: (1 + 2 + 1) * 2 per pixel
    for mode in ("clip", "abs", "signed"):
        shown = to_display(out, mode)
        assert shown.shape == (12, 10, 3) and shown.min() >= 0 and shown.max() <= 1
    with pytest.raises(ValueError, match="k odd"):
        filter_image(image, [[1, 0], [0, 1]])


def test_kernel_explorer_redraws_on_every_change():
    pytest.importorskip("ipywidgets")
    from utils.widgets.convolutions import kernel_explorer

    ui = kernel_explorer("coins", preset="identity", size=64)
    first = ui.filtered.value
    assert first and "kernel sum = 1" in ui.info.value
    ui.preset.value = "Sobel y (horizontal edges)"
    assert [b.value for b in ui.kernel_boxes] == [-1, -2, -1, 0, 0, 0, 1, 2, 1]
    assert ui.display_mode.value == "signed" and "kernel sum = 0" in ui.info.value
    second = ui.filtered.value
    assert second != first
    ui.kernel_boxes[4].value = 2.0
    assert "kernel sum = 2" in ui.info.value and ui.filtered.value != second
    with pytest.raises(ValueError, match="preset must be one of"):
        kernel_explorer(preset="nope")
