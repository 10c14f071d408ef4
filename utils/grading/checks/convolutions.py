"""Chapter 06 (assignment ``06_convolutions``): the convolution's gradients, padding modes, dilation.

The chapter wrote the convolution's forward pass (loops and im2col), the transposed convolution, max
pooling with its backward pass and the arithmetic of output sizes and receptive fields. The exercise
asks for what it did not print:

* q1 ``conv2d_backward(dout, x, w, stride, padding) -> (dx, dw, db)`` (2 points): the gradients of
  ``F.conv2d(x, w, b, stride, padding)`` given ``dout``, against autograd in float64; strides that do
  not divide the input evenly (input pixels no window reaches get 0), padding, 1x1 and non-square
  kernels, a batch of one, float32 (``1e-4 + 1e-4 * |expected|``) and float64 (``1e-9 + 1e-7``).
* q2 ``pad2d(x, pad, mode)`` (1 point): ``F.pad(x, pad, mode)`` for a 4-D ``x`` and ``pad = (left,
  right, top, bottom)``, modes ``"constant"`` (zeros), ``"reflect"``, ``"replicate"``, ``"circular"``;
  asymmetric and zero pads, the largest reflect pad (size - 1), a circular pad of the whole size, a
  one-pixel-high image; exact.
* q3 ``conv2d_dilated(x, w, b, stride, padding, dilation, padding_mode)`` (1 point): ``nn.Conv2d``'s
  forward pass with dilation and its four padding modes (``"zeros"``, ``"reflect"``, ``"replicate"``,
  ``"circular"``), against ``F.conv2d`` on ``F.pad`` in float64; tolerances as q1.
* q4 (make it work, 2 points) ``predict(images (B, 1, 40, 40)) -> labels (B,)``: the digits of
  :func:`utils.data.mnist` on a 40x40 canvas. The training images sit in the centre; the grader's
  (the 1,000 digits of the test split, which the exercise never loads) anywhere on the canvas, at
  offsets drawn with the grader's seed. Accuracy: 2 points from 0.90, 1 from 0.80; 30 s for all
  predictions. The solution (global max pooling, training on shifted copies) reaches about 0.94; the same
  network trained on the centred digits as they are about 0.69.
* r1-r6 (review, half a point each): receptive fields with a stride and with dilation, an output
  size, the weights of a depthwise-separable convolution, the multiply-adds of a layer, a diagnosis.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the convolutions, padding and
fold/unfold of ``torch.nn.functional`` and ``torch.nn``, ``torch.nn.grad``, autograd (q1) and the
course's own modules (``utils.scratch``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..challenge import MakeItWork
from ..core import Case, Question
from ..forbid import AUTOGRAD, COURSE
from ..review import Review

ASSIGNMENT = "06_convolutions"
TITLE = "Convolutions: gradients, padding and dilation"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-4, "rtol": 1e-4}, F64: {"atol": 1e-9, "rtol": 1e-7}}


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1 the gradients

BACKWARD = [  # (label, N, C_in, H, W, C_out, kh, kw, stride, padding, dtype)
    ("3 -> 4 channels, 3x3, stride 1, padding 1", 2, 3, 7, 7, 4, 3, 3, 1, 1, F64),
    (
        "stride 2 that does not divide (H = W = 8, k = 3): the last row and column get no gradient",
        2,
        2,
        8,
        8,
        3,
        3,
        3,
        2,
        0,
        F64,
    ),
    ("stride 2, padding 2, 5x5 kernel", 1, 2, 9, 9, 2, 5, 5, 2, 2, F64),
    ("1x1 kernel", 3, 4, 5, 5, 3, 1, 1, 1, 0, F64),
    ("non-square input (5x8) and kernel (2x3), stride 3, padding 1", 2, 2, 5, 8, 3, 2, 3, 3, 1, F64),
    ("a batch of one, one channel in and out", 1, 1, 6, 6, 1, 3, 3, 1, 0, F64),
    ("float32, 4 -> 8 channels, 3x3, stride 2, padding 1", 4, 4, 10, 10, 8, 3, 3, 2, 1, F32),
]
BACKWARD_HINT = (
    "db sums dout over (N, H_out, W_out); every output out[n, o, i, j] adds w[o, c, u, v] * x_pad[n, c, i s "
    "+ u, j s + v], so the weight w[o, c, u, v] collects dout[n, o, i, j] times the input pixel it met, over "
    "all n, i, j, and that input pixel collects dout[n, o, i, j] times the weight, over all o and every "
    "window that contains it; work on the padded input and crop the padding off dx at the end"
)


def backward_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, n, c_in, h, w_, c_out, kh, kw, stride, padding, dtype in BACKWARD:
        x = _randn(g, n, c_in, h, w_, dtype=F64).requires_grad_()
        w = _randn(g, c_out, c_in, kh, kw, dtype=F64).requires_grad_()
        b = _randn(g, c_out, dtype=F64).requires_grad_()
        out = F.conv2d(x, w, b, stride=stride, padding=padding)
        dout = _randn(g, *out.shape, dtype=F64)
        out.backward(dout)
        cases.append(
            Case(
                label,
                "conv2d_backward",
                {
                    "dout": dout.to(dtype),
                    "x": x.detach().to(dtype),
                    "w": w.detach().to(dtype),
                    "stride": stride,
                    "padding": padding,
                },
                tuple(t.grad.to(dtype) for t in (x, w, b)),
                **TOL[dtype],
                hint=BACKWARD_HINT,
                unchanged=("dout", "x", "w"),
                outputs=("dx", "dw", "db"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 padding modes

PADS = [  # (label, shape, pad (left, right, top, bottom), mode)
    ("zeros (constant), 2 on every side", (2, 3, 5, 6), (2, 2, 2, 2), "constant"),
    ("reflect, asymmetric (1, 2, 0, 3)", (2, 2, 5, 6), (1, 2, 0, 3), "reflect"),
    ("reflect by size - 1, the largest it allows", (1, 2, 4, 5), (4, 4, 3, 3), "reflect"),
    ("replicate, asymmetric (3, 0, 2, 1)", (2, 3, 4, 4), (3, 0, 2, 1), "replicate"),
    ("replicate a one-pixel-high image", (1, 1, 1, 5), (2, 2, 3, 3), "replicate"),
    ("circular, 1 on every side", (2, 2, 5, 5), (1, 1, 1, 1), "circular"),
    ("circular by the whole size, asymmetric", (1, 2, 3, 4), (4, 2, 3, 0), "circular"),
    ("constant, nothing on the left and the top", (1, 1, 3, 3), (0, 2, 0, 1), "constant"),
]
PAD_HINT = (
    "pad = (left, right, top, bottom), the last dimension first, as in F.pad; build the padded tensor by "
    "indexing x with one row index and one column index per output pixel: for reflect, index -1 reads 1 "
    "(the edge itself is not repeated), for replicate the edge pixel, for circular the other side (i mod n)"
)


def pad_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, shape, pad, mode in PADS:
        x = _randn(g, *shape)
        cases.append(
            Case(
                label,
                "pad2d",
                {"x": x, "pad": pad, "mode": mode},
                F.pad(x, pad, mode=mode),
                atol=0.0,
                rtol=0.0,
                hint=PAD_HINT,
                unchanged=("x",),
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 dilation and padding modes

DILATED = [  # (label, N, C_in, H, W, C_out, k, stride, padding, dilation, mode, dtype)
    ("dilation 2, zeros padding 2 (same size)", 2, 3, 9, 9, 4, 3, 1, 2, 2, "zeros", F64),
    ("dilation 3, stride 2, no padding", 1, 2, 13, 11, 3, 3, 2, 0, 3, "zeros", F64),
    ("reflect padding 1, dilation 1", 2, 2, 6, 7, 3, 3, 1, 1, 1, "reflect", F64),
    ("replicate padding 2, dilation 2, stride 2", 2, 3, 8, 8, 2, 3, 2, 2, 2, "replicate", F64),
    ("circular padding 2, 5x5 kernel", 1, 2, 7, 7, 2, 5, 1, 2, 1, "circular", F64),
    ("float32, circular padding 1, dilation 2", 2, 4, 9, 9, 4, 3, 1, 1, 2, "circular", F32),
]
DILATED_HINT = (
    "pad first, in the padding mode asked for (your pad2d: 'zeros' is F.pad's 'constant'), then convolve "
    "without padding; with dilation d the kernel's taps are d pixels apart, so tap (u, v) reads the padded "
    "input at (i s + d u, j s + d v) and the output size is (H + 2p - d (k - 1) - 1) // s + 1"
)


def dilated_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, n, c_in, h, w_, c_out, k, stride, padding, dilation, mode, dtype in DILATED:
        x, w = _randn(g, n, c_in, h, w_, dtype=F64), _randn(g, c_out, c_in, k, k, dtype=F64)
        b = _randn(g, c_out, dtype=F64) if mode != "circular" else None
        padded = F.pad(x, (padding,) * 4, mode="constant" if mode == "zeros" else mode)
        expected = F.conv2d(padded, w, b, stride=stride, dilation=dilation)
        args = {
            "x": x.to(dtype),
            "w": w.to(dtype),
            "b": None if b is None else b.to(dtype),
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "padding_mode": mode,
        }
        cases.append(
            Case(
                label,
                "conv2d_dilated",
                args,
                expected.to(dtype),
                **TOL[dtype],
                hint=DILATED_HINT,
                unchanged=("x", "w"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 make it work

CANVAS, N_FIT, N_VALIDATION = 40, 1000, 500


def place(images: torch.Tensor, offsets: torch.Tensor, size: int = CANVAS) -> torch.Tensor:
    """Images (N, 1, h, w) pasted on a black ``size`` x ``size`` canvas, image i with its top-left corner
    at ``offsets[i] = (row, column)``: (N, 1, size, size)."""
    n, _, h, w = images.shape
    canvas = torch.zeros(n, 1, size, size)
    for i, (r, c) in enumerate(offsets.tolist()):
        canvas[i, :, r : r + h, c : c + w] = images[i]
    return canvas


def random_offsets(n: int, generator: torch.Generator, size: int = CANVAS, image: int = 28) -> torch.Tensor:
    """``n`` (row, column) offsets drawn uniformly so that a 28x28 image stays on the canvas: (n, 2)."""
    return torch.randint(0, size - image + 1, (n, 2), generator=generator)


def canvas_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data of q4: ``(x_fit (1000, 1, 40, 40), y_fit, x_val (500, 1, 40, 40), y_val)``, from the
    training split of ``utils.data.mnist``: 1,000 digits in the centre of the canvas to train on, and 500
    others placed at random, as the grader's will be, to validate on."""
    import utils.data

    train = utils.data.mnist("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    fit, val = order[:N_FIT], order[N_FIT : N_FIT + N_VALIDATION]
    images = train.images.float() / 255 if train.images.dtype == torch.uint8 else train.images.float()
    centre = torch.full((N_FIT, 2), (CANVAS - 28) // 2)
    x_val = place(images[val], random_offsets(N_VALIDATION, torch.Generator().manual_seed(seed + 1)))
    return place(images[fit], centre), train.targets[fit], x_val, train.targets[val]


def held_out_canvas_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q4: the 1,000 test digits at offsets drawn with the grader's seed."""
    import utils.data

    test = utils.data.mnist("test")
    images = test.images.float() / 255 if test.images.dtype == torch.uint8 else test.images.float()
    return place(images, random_offsets(len(images), torch.Generator().manual_seed(int(seed)))), test.targets


def _validation_canvas_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = canvas_digits()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Receptive field of three 3x3 convolutions with strides 1, 1, 2",
        7,
        points=0.5,
        explain="r = 1 + 2 + 2 + 2 = 7: a layer adds (k - 1) times the product of the strides of the layers "
        "*before* it; the stride 2 of the last layer spreads only what comes after it (nothing here). "
        "Multiplying each layer's k - 1 by its own stride gives the wrong 1 + 2 + 2 + 4 = 9.",
    ),
    Review(
        "r2",
        "Receptive field of three 3x3 convolutions with dilation 2 (stride 1)",
        13,
        points=0.5,
        explain="A 3x3 kernel with dilation 2 spans d (k - 1) + 1 = 5 pixels, so each layer adds 4: "
        "r = 1 + 4 + 4 + 4 = 13 (15 would be three 5x5 spans added up, counting the centre pixel three "
        "times).",
    ),
    Review(
        "r3",
        "Output size of Conv2d(kernel_size=5, stride=2, padding=1) on 32x32",
        15,
        points=0.5,
        explain="H_out = floor((H + 2p - k) / s) + 1 = floor((32 + 2 - 5) / 2) + 1 = floor(14.5) + 1 = 15: "
        "the last window that fits starts at pixel 28 of the padded 34.",
    ),
    Review(
        "r4",
        "Weights of a depthwise-separable 3x3 convolution from 64 to 128 channels (no bias)",
        8768,
        points=0.5,
        explain="A depthwise 3x3 convolution has one 3x3 filter per input channel: 64 * 9 = 576; the 1x1 "
        "pointwise convolution maps 64 to 128 channels: 64 * 128 = 8,192; 576 + 8,192 = 8,768, against "
        "64 * 128 * 9 = 73,728 for a full 3x3 convolution.",
    ),
    Review(
        "r5",
        "Multiply-adds of Conv2d(3, 16, 3, padding=1) on one 32x32 image (no bias)",
        442368,
        points=0.5,
        explain="Each of the 16 * 32 * 32 = 16,384 outputs is a sum of 3 * 3 * 3 = 27 products: 16,384 * 27 "
        "= 442,368 multiply-adds (padding 1 keeps the 32x32 size).",
    ),
    Review(
        "r6",
        "Centred digits, shifted test digits: which two changes help?",
        {"a", "c"},
        points=0.5,
        explain="A convolution is translation-equivariant, but flattening its feature map into a linear "
        "layer ties each weight to a position. (a) global pooling over the positions makes the answer "
        "(nearly) invariant to where the digit is, and (c) training on shifted copies shows the network the "
        "positions it will meet. (b) more epochs and (d) a larger linear layer fit the centred digits "
        "better, not the shifted ones.",
    ),
]

CONV = (
    "torch.nn.functional.conv2d",
    "torch.nn.functional.conv1d",
    "torch.nn.functional.conv_transpose2d",
    "torch.nn.functional.unfold",
    "torch.nn.functional.fold",
    "torch.convolution",
    "torch.nn.Conv2d",
    "torch.nn.ConvTranspose2d",
    "torch.nn.grad",
)
PAD = ("torch.nn.functional.pad", "torch.constant_pad_nd")
WHY = "chapter 06's exercise asks for the operations written with indexing, slicing and matrix products"

QUESTIONS = [
    Question(
        "q1",
        "The convolution's gradients dx, dw, db",
        ("conv2d_backward",),
        backward_cases,
        points=2,
        forbid=(*CONV, *AUTOGRAD, *COURSE),
        why="q1 asks for the gradients derived by hand, without autograd",
    ),
    Question("q2", "Padding modes", ("pad2d",), pad_cases, forbid=(*PAD, *CONV, *COURSE), why=WHY),
    Question(
        "q3",
        "Dilated convolution with a padding mode",
        ("conv2d_dilated",),
        dilated_cases,
        forbid=(*CONV, *PAD, *COURSE),
        why=WHY,
    ),
    MakeItWork(
        "q4",
        "Make it work: digits anywhere on the canvas",
        held_out_canvas_digits,
        metric="accuracy",
        num_classes=10,
        steps=((0.90, 2), (0.80, 1)),
        budget=30,
        batch_size=250,
        preview=_validation_canvas_digits,
    ),
    *REVIEW,
]
