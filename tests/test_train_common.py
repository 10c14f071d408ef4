"""utils.common (the helpers the loop, debug, optim and interpret share) and the loop's StepContext."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.common import (
    check_loader,
    check_model,
    eval_mode,
    keep_modes,
    model_device,
    move_to,
    optimizer_step,
    unpack_batch,
)
from utils.train import StepContext


def test_move_to_goes_through_nested_containers_and_keeps_the_rest():
    Pair = namedtuple("Pair", "a b")
    images = [torch.rand(3, 5, 7), torch.rand(3, 9, 4)]  # different sizes: a detector's batch
    batch = {
        "image": torch.rand(2, 3, 4, 4),
        "boxes": [torch.rand(1, 4), torch.rand(0, 4)],
        "name": "scene",
        "pair": Pair(torch.zeros(2), 3),
        "images": (images, [{"labels": torch.ones(2, dtype=torch.int64)}]),
    }
    moved = move_to(batch, torch.device("meta"))
    assert moved["image"].device.type == "meta" and moved["boxes"][1].shape == (0, 4)
    assert all(t.device.type == "meta" for t in moved["images"][0]) and moved["images"][0][1].shape == (
        3,
        9,
        4,
    )
    assert (
        moved["images"][1][0]["labels"].device.type == "meta"
        and moved["images"][1][0]["labels"].dtype == torch.int64
    )
    assert moved["name"] == "scene" and isinstance(moved["pair"], Pair) and moved["pair"].b == 3
    assert isinstance(moved["images"], tuple) and isinstance(moved["boxes"], list)
    cl = move_to((torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4)), "cpu", channels_last=True)
    assert cl[0].is_contiguous(memory_format=torch.channels_last) and not cl[0].is_contiguous()
    assert cl[1].is_contiguous()  # only 4-D tensors change layout


def test_unpack_batch_and_the_argument_checks_name_what_was_wrong():
    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert unpack_batch([x, y])[0] is x and unpack_batch((x, y))[1] is y
    with pytest.raises(
        TypeError,
        match=r"each batch of val_loader must be an \(inputs, targets\) pair, got a dict "
        r"with keys \['image'\]",
    ):
        unpack_batch({"image": x}, "each batch of val_loader")
    with pytest.raises(TypeError, match="pair of tensors, got a pair of \\(Tensor, list\\)"):
        unpack_batch((x, [1, 2]), "batch", tensors=True)
    with pytest.raises(TypeError, match="got a tuple of 3 items"):
        unpack_batch((x, y, y))
    with pytest.raises(TypeError, match="net must be a torch.nn.Module, got function"):
        check_model(lambda t: t, "net")
    for bad in (torch.zeros(3), "data", 3):
        with pytest.raises(TypeError, match="train_loader must be an iterable of batches"):
            check_loader(bad, "train_loader")
    assert check_loader([(x, y)], "loader") == [(x, y)]


def test_model_device_falls_back_on_buffers_then_the_default():
    assert model_device(nn.Linear(2, 2).to("meta")).type == "meta"
    assert model_device(nn.BatchNorm1d(2, affine=False).to("meta")).type == "meta"  # buffers only
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.ReLU(), default="meta") == torch.device("meta")


def test_eval_mode_and_keep_modes_restore_every_submodule():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.BatchNorm1d(2)))
    model[2][0].eval()  # a frozen part
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[1].training and not model[2][0].training
    with pytest.raises(RuntimeError), keep_modes(model):
        model.train()
        raise RuntimeError
    assert not model[2][0].training


def test_optimizer_step_equals_the_four_lines_and_clips():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    for p in a.parameters():  # a stale gradient must not leak into the step
        p.grad = torch.ones_like(p)
    optimizer_step(opt_a, F.cross_entropy(a(x), y), max_norm=0.05)
    opt_b.zero_grad()
    F.cross_entropy(b(x), y).backward()
    assert torch.nn.utils.clip_grad_norm_(b.parameters(), 0.05) > 0.05
    opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_step_context_windows_of_accumulation():
    model = nn.Linear(2, 1)
    ctx = StepContext(
        torch.device("cpu"), optimizers={"opt": torch.optim.SGD(model.parameters(), lr=0.1)}, accumulate=3
    )
    ctx.steps_per_epoch = 7  # windows: batches 0-2, 3-5, 6
    sizes, ends = [], []
    for i in range(7):
        ctx.begin_batch(i)
        sizes.append(ctx.window_size)
        ends.append(ctx.end_of_window)
    assert sizes == [3, 3, 3, 3, 3, 3, 1] and ends == [False, False, True, False, False, True, True]
    with pytest.raises(ValueError, match="name the one"):
        StepContext(
            torch.device("cpu"),
            optimizers={"g": torch.optim.SGD(model.parameters()), "d": torch.optim.SGD(model.parameters())},
        ).backward(torch.ones(()))
    with pytest.raises(RuntimeError, match="not to validation"):
        StepContext(torch.device("cpu")).step()
    with pytest.raises(KeyError, match="no optimizer named 'x'"):
        ctx.step("x")
