"""utils.flops: parameter and FLOP counts against hand formulas and known values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import utils.models as um
from utils.flops import conv_params, count_flops, count_parameters, flops_by_module, format_count, summarize


def test_count_parameters_counts_shared_frozen_and_skips_buffers():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[4].requires_grad_(False)
    # the shared layer once; BN weight and bias, not its buffers
    assert count_parameters(model) == 20 + 8 + 10
    assert count_parameters(model, trainable_only=True) == 28
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters(torch.zeros(3))


@pytest.mark.parametrize(
    "c_in, c_out, k, bias, groups",
    [(3, 64, 7, False, 1), (64, 64, 3, True, 1), (32, 32, 3, False, 32), (16, 48, 1, True, 4)],
)
def test_conv_params_matches_nn_conv2d(c_in, c_out, k, bias, groups):
    assert conv_params(c_in, c_out, k, bias=bias, groups=groups) == count_parameters(
        nn.Conv2d(c_in, c_out, k, bias=bias, groups=groups)
    )


def test_conv_params_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible by groups"):
        conv_params(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        conv_params(3, 4, 0)


def test_count_flops_of_a_convolution_and_a_linear_layer():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    # 2 FLOPs per multiply-accumulate
    assert count_flops(conv, (2, 8, 10, 10)) == 2 * 2 * 16 * 8 * 9 * 10 * 10
    assert count_flops(nn.Linear(5, 7), torch.zeros(3, 5)) == 2 * 3 * 5 * 7


def test_count_flops_of_known_networks_on_the_meta_device():
    with torch.device("meta"):
        resnet18, resnet50, vgg16 = um.resnet18(), um.resnet50(), um.vgg16()
    # the multiply-accumulates usually quoted: ResNet-18 1.82 G, ResNet-50 4.11 G (v1.5), VGG-16 15.47 G
    assert count_flops(resnet18) / 2e9 == pytest.approx(1.814, rel=0.01)
    assert count_flops(resnet50) / 2e9 == pytest.approx(4.09, rel=0.02)
    assert count_flops(vgg16) / 2e9 == pytest.approx(15.47, rel=0.01)
    by_module = flops_by_module(resnet18)
    assert set(by_module) == {"conv1", "layer1", "layer2", "layer3", "layer4", "fc"}
    assert sum(by_module.values()) == count_flops(resnet18)


def test_count_flops_restores_the_training_mode():
    model = um.lenet5()
    model.train()
    count_flops(model, (1, 1, 28, 28))
    assert model.training
    with pytest.raises(ValueError, match="input shape"):
        count_flops(model, (28,))


def test_summarize_and_format_count():
    rows = summarize({"lenet": um.lenet5()}, (1, 1, 28, 28))
    assert rows[0]["model"] == "lenet" and rows[0]["params"] == 61_706 and rows[0]["flops"] > 0
    assert format_count(11_689_512) == "11.69M" and format_count(3.6e9) == "3.60G"
    assert format_count(12) == "12"
