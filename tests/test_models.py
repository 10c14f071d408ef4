"""The course's models (utils.models) against torchvision: parameter counts, state dicts, outputs.

Big networks are built on the ``meta`` device where only shapes matter (parameter counts), and once
per module where weights matter (state-dict loading, equal outputs at batch 1 and 64 px). Extra
checks: small-input variants at 28 and 64 px, gradients reach every parameter, channels_last and
bf16 autocast on CPU, the building blocks against references.

Marked tests: ``gpu`` (CUDA; skipped without it), ``slow`` + ``COURSE_COMPILE_TESTS=1`` for
``torch.compile`` (compiling on a 2-core CPU takes tens of seconds per model, so it is opt-in).
"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

import utils.models as um
from utils.models import efficientnet as effnet_module
from utils.models.common import make_divisible
from utils.models.vit import state_dict_from_torchvision

# --------------------------------------------------------------------------- parameter counts at 224 px

SAME_AS_TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "vgg11",
    "vgg16",
    "vgg11_bn",
    "vgg16_bn",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_b1",
    "vit_b_16",
    "alexnet",
]

KNOWN_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "densenet121": 7_978_856,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "vit_b_16": 86_567_656,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SAME_AS_TORCHVISION)
def test_parameter_count_and_names_equal_torchvision(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        ours = getattr(um, name)()
        ref = getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(ref)
    if name in KNOWN_COUNTS:
        assert n_params(ours) == KNOWN_COUNTS[name]
    if name != "vit_b_16":  # the ViT has readable names of its own (see test_vit_loads_torchvision_weights)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }


def test_builders_take_num_classes_and_in_channels():
    with torch.device("meta"):
        for name in [
            "resnet18",
            "resnet50",
            "vgg16",
            "densenet121",
            "mobilenet_v2",
            "efficientnet_b0",
            "vit_b_16",
            "alexnet",
            "googlenet",
        ]:
            model = getattr(um, name)(num_classes=7, in_channels=1)
            out = model(torch.zeros(1, 1, 224, 224))
            assert out.shape == (1, 7), name
        assert um.lenet5().classifier[-1].out_features == 10 and um.lenet5().features[0].in_channels == 1
        tiny = um.vit_tiny()
        assert (tiny.img_size, tiny.patch_size, tiny.head.out_features, tiny.patch_embed.in_channels) == (
            28,
            4,
            10,
            1,
        )


# ------------------------------------------------------------------- torchvision's weights load, same outputs

LOADABLE = [
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11",
    "vgg16",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
]


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that eval mode tests them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


@pytest.fixture(scope="module")
def torchvision_models():
    """name -> a torchvision model with random weights in eval mode, built once per module."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)().eval()
            randomize_batch_norms(model)
            cache[name] = model
        return cache[name]

    yield get
    cache.clear()


@pytest.mark.parametrize("name", LOADABLE)
def test_loads_torchvision_state_dict_and_gives_the_same_outputs(name, torchvision_models):
    ref = torchvision_models(name)
    with torch.device("meta"):
        ours = getattr(um, name)()
    # strict: a missing or unexpected key, or a shape mismatch, raises; assign=True takes the tensors as they
    # are
    result = ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    ours.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (1, 1000)
    assert expected.abs().max() > 1e-3  # a real signal, not zeros
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_loading_checks_shapes_and_names():
    ours = um.resnet18(num_classes=10, small_input=True, width=8)
    with pytest.raises(RuntimeError, match="size mismatch"):
        ours.load_state_dict(um.resnet18(num_classes=10, width=8).state_dict())  # 7x7 stem vs 3x3 stem
    state = ours.state_dict()
    state["layer4.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        ours.load_state_dict(state)


def test_vit_loads_torchvision_weights_through_the_renaming():
    torch.manual_seed(0)
    ref = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    ).eval()
    with torch.no_grad():  # torchvision starts the head at zero: make it (and the class token) random
        ref.heads.head.weight.normal_()
        ref.class_token.normal_()
    ours = um.VisionTransformer(32, 8, 3, 10, dim=64, depth=2, heads=4, mlp_dim=128).eval()
    result = ours.load_state_dict(state_dict_from_torchvision(ref.state_dict()), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no course name"):
        state_dict_from_torchvision({"heads.pre_logits.weight": torch.zeros(1)})


# --------------------------------------------------------------------------- small inputs

SMALL = {  # name -> builder of a small model for 1-channel images and 10 classes (img_size -> model)
    "lenet5": lambda s: um.lenet5(),
    "lenet5 relu/max": lambda s: um.lenet5(activation="relu", pool="max"),
    "alexnet": lambda s: um.alexnet(10, in_channels=1, small_input=True, hidden=64),
    "vgg11": lambda s: um.vgg11(10, in_channels=1, small_input=True, width=8),
    "vgg16_bn": lambda s: um.vgg16(10, in_channels=1, small_input=True, width=8, batch_norm=True),
    "googlenet": lambda s: um.googlenet(10, in_channels=1, small_input=True),
    "resnet18": lambda s: um.resnet18(10, in_channels=1, small_input=True, width=8),
    "resnet34": lambda s: um.resnet34(10, in_channels=1, small_input=True, width=8),
    "resnet50": lambda s: um.resnet50(10, in_channels=1, small_input=True, width=8),
    "preact_resnet18": lambda s: um.preact_resnet18(10, in_channels=1, small_input=True, width=8),
    "preact_resnet50": lambda s: um.preact_resnet50(10, in_channels=1, small_input=True, width=8),
    "se_resnet18": lambda s: um.se_resnet18(10, in_channels=1, small_input=True, width=16),
    "resnet_cifar20": lambda s: um.resnet_cifar(20, 10, in_channels=1, width=8),
    "plain_cifar20": lambda s: um.resnet_cifar(20, 10, in_channels=1, width=8, residual=False),
    "densenet_small": lambda s: um.densenet_small(growth_rate=6, block_config=(3, 3, 3)),
    "mobilenet_v2": lambda s: um.mobilenet_v2(10, in_channels=1, small_input=True, width_mult=0.25),
    "efficientnet": lambda s: um.EfficientNet(0.25, 0.25, 10, in_channels=1, small_input=True),
    "vit_tiny": lambda s: um.vit_tiny(img_size=s, patch_size=4 if s == 28 else 8, dim=32, depth=2),
}
FULL_WIDTH = {  # the builders' own small-input defaults, too heavy to train in a unit test: forward only
    "googlenet": lambda: um.googlenet(10, in_channels=1, small_input=True),
    "densenet_small": lambda: um.densenet_small(),
    "efficientnet_b0": lambda: um.efficientnet_b0(10, in_channels=1, small_input=True),
    "mobilenet_v2": lambda: um.mobilenet_v2(10, in_channels=1, small_input=True),
    "vit_tiny": lambda: um.vit_tiny(),
}


@pytest.mark.parametrize("name", [n for n in SMALL if n != "googlenet"])
def test_small_input_variants_train_on_28_and_64_px(name):
    for size in (28, 64):
        torch.manual_seed(0)
        model = SMALL[name](size)
        x = torch.randn(2, 1, size, size)
        out = model(x)  # training mode: batch statistics, dropout
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"parameters that the output does not depend on: {no_grad[:5]}"
        model.eval()
        with torch.no_grad():
            assert model(x[:1]).shape == (1, 10)


@pytest.mark.parametrize("name", list(FULL_WIDTH))
def test_small_input_defaults_forward_28_and_64_px(name):
    torch.manual_seed(0)
    model = FULL_WIDTH[name]().eval()
    with torch.no_grad():
        for size in (28,) if name == "vit_tiny" else (28, 64):
            out = model(torch.randn(1, 1, size, size))
            assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_small_input_keeps_resolution_early():
    big, small = um.resnet18(width=8), um.resnet18(small_input=True, width=8)
    assert big.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 2, 2)
    assert small.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 8, 8)
    assert (
        small.conv1.kernel_size == (3, 3)
        and small.conv1.stride == (1, 1)
        and isinstance(small.maxpool, nn.Identity)
    )
    mob = um.mobilenet_v2(small_input=True, width_mult=0.25)
    assert mob.features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4  # total stride 8 instead of 32
    eff = um.EfficientNet(0.25, 0.25, small_input=True)
    assert eff.features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4
    assert um.vgg11(small_input=True, width=8).features(torch.zeros(1, 3, 28, 28)).shape == (1, 64, 1, 1)


# ----------------------------------------------------------------- ResNet structure (chapter 08 relies on it)


def test_resnets_expose_layer1_to_layer4_for_grad_cam():
    model = um.resnet18(num_classes=10, in_channels=1, small_input=True, width=16).eval()
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("layer4", o))
    model(torch.randn(1, 1, 32, 32))
    assert feats["layer4"].shape == (1, 128, 4, 4)
    for name in ("resnet18", "resnet34", "resnet50", "preact_resnet18"):
        m = getattr(um, name)(small_input=True, width=8)
        assert all(isinstance(getattr(m, f"layer{i}"), nn.Sequential) for i in range(1, 5))
    with torch.device("meta"):
        assert len(um.resnet18().layer1) == 2 and len(um.resnet50().layer3) == 6


def test_basic_block_shortcut_is_identity_or_projection():
    same = um.BasicBlock(16, 16, 1)
    assert same.downsample is None
    down = um.BasicBlock(16, 32, 2)
    assert isinstance(down.downsample[0], nn.Conv2d) and down.downsample[0].stride == (2, 2)
    assert down(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    assert um.BasicBlock(16, 32, 2, residual=False).downsample is None
    bottleneck = um.Bottleneck(64, 16, 2)
    assert bottleneck(torch.randn(1, 64, 8, 8)).shape == (1, 64, 4, 4)


def test_residual_block_starts_as_identity_with_zero_init():
    torch.manual_seed(0)
    model = um.resnet18(small_input=True, width=8, zero_init_residual=True).eval()
    block = model.layer1[0]
    x = torch.rand(2, 8, 6, 6)  # non-negative, as after a ReLU
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)  # relu(0 + x) = x
    plain = um.resnet18(small_input=True, width=8, zero_init_residual=True, residual=False).eval()
    with torch.no_grad():
        assert plain.layer1[0](x).abs().max() == 0  # without the shortcut the zeroed branch outputs zeros


def test_preactivation_block_has_a_clean_identity_path():
    block = um.PreActBasicBlock(8, 8).eval()
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 8, 5, 5)  # negative values too: nothing is applied after the addition
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    model = um.preact_resnet18(small_input=True, width=8)
    assert model.bn_final is not None and model.bn_final.num_features == 64


def test_resnet_cifar_depths_and_errors():
    for depth, blocks in ((20, 3), (32, 5), (56, 9)):
        m = um.resnet_cifar(depth)
        convs = [
            mod for name, mod in m.named_modules() if isinstance(mod, nn.Conv2d) and "downsample" not in name
        ]
        assert len(convs) + 1 == depth and len(m.layer1) == blocks  # 6n convs + stem... + fc = 6n + 2
        assert not hasattr(m, "layer4")
    assert 0.26e6 < n_params(um.resnet_cifar(20)) < 0.28e6  # 0.27M in the paper
    with pytest.raises(ValueError, match="6n \\+ 2"):
        um.resnet_cifar(21)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="input channels"):
        um.resnet18(in_channels=1)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="config must be one of"):
        um.VGG("vgg12")
    with pytest.raises(ValueError, match="layers must hold"):
        um.ResNet(um.BasicBlock, [2, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="shape \\(N, 1, 28, 28\\)"):
        um.vit_tiny()(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by patch_size"):
        um.PatchEmbedding(30, 4, 1, 16)
    with pytest.raises(ValueError, match="width must be a positive"):
        um.resnet18(width=0)


# ------------------------------------------------------------------------- building blocks against references


def test_squeeze_excitation_matches_torchvision_ops():
    from torchvision.ops import SqueezeExcitation as TVSE

    ours, ref = um.SqueezeExcitation(32, reduction=8), TVSE(32, 4)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 32, 5, 5)
    torch.testing.assert_close(ours(x), ref(x))
    s = ours.scale(x)
    assert s.shape == (3, 32, 1, 1) and ((s > 0) & (s < 1)).all()
    assert um.SqueezeExcitation(8, 16).squeeze_channels == 1  # never zero hidden units


def test_inception_module_concatenates_its_branches():
    block = um.Inception(192, 64, 96, 128, 16, 32, 32).eval()
    x = torch.randn(1, 192, 7, 7)
    out = block(x)
    assert out.shape == (1, 256, 7, 7) and block.out_channels == 256
    with torch.no_grad():
        torch.testing.assert_close(out[:, :64], block.branch1(x))
        torch.testing.assert_close(out[:, 64 + 128 + 32 :], block.branch4(x))
    assert block.branch3[1][0].kernel_size == (5, 5)  # the paper's 5x5


def test_dense_block_keeps_its_input_and_grows_by_k_per_layer():
    block = um.densenet.DenseBlock(num_layers=4, in_channels=10, growth_rate=6)
    x = torch.randn(2, 10, 8, 8)
    out = block(x)
    assert out.shape == (2, 10 + 4 * 6, 8, 8)
    torch.testing.assert_close(out[:, :10], x)  # concatenation: the input is passed on untouched
    layer3 = block["denselayer3"]
    assert layer3.conv1.in_channels == 10 + 2 * 6


def test_inverted_residual_matches_torchvision():
    from torchvision.models.mobilenetv2 import InvertedResidual as TVIR

    for cin, cout, stride, t in ((16, 16, 1, 6), (16, 24, 2, 6), (32, 16, 1, 1)):
        ref = TVIR(cin, cout, stride, t).eval()
        randomize_batch_norms(ref)
        ours = um.InvertedResidual(cin, cout, stride, t).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, cin, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x))
        assert ours.use_res_connect == (stride == 1 and cin == cout)


def test_make_divisible_matches_torchvision():
    from torchvision.models._utils import _make_divisible

    for v in [1, 3.5, 7.9, 8, 12, 16 * 0.35, 32 * 0.25, 1280 * 1.4, 100, 333.3]:
        assert make_divisible(v, 8) == _make_divisible(v, 8)


def test_compound_scaling_doubles_flops_per_step():
    scale = um.compound_scaling(1)
    assert scale["depth"] == pytest.approx(1.2) and scale["width"] == pytest.approx(1.1)
    assert scale["resolution"] == round(224 * 1.15)
    for phi in (1, 2, 3):
        assert um.compound_scaling(phi)["flops"] == pytest.approx(2**phi, rel=0.1 * phi)
    with pytest.raises(ValueError):
        um.compound_scaling(-1)


def test_stochastic_depth_drops_whole_samples_and_keeps_the_mean():
    x = torch.ones(4000, 3, 2, 2)
    assert effnet_module.stochastic_depth(x, 0.3, training=False) is x
    torch.manual_seed(0)
    y = effnet_module.stochastic_depth(x, 0.3, training=True)
    per_sample = y.flatten(1)
    assert (
        (per_sample == 0).all(1) | (per_sample == per_sample[:, :1]).all(1)
    ).all()  # all or nothing per sample
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.3) < 0.03
    assert abs(y.mean().item() - 1.0) < 0.05


def test_patch_embedding_is_a_linear_map_of_each_patch():
    torch.manual_seed(0)
    embed = um.PatchEmbedding(img_size=12, patch_size=4, in_channels=2, dim=5)
    x = torch.randn(3, 2, 12, 12)
    patches = nn.functional.unfold(x, kernel_size=4, stride=4).transpose(
        1, 2
    )  # (N, 9, 2*4*4), (c, row, col) order
    expected = patches @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    out = embed(x)
    assert out.shape == (3, 9, 5) and embed.num_patches == 9
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_attention_matches_nn_multihead_attention():
    torch.manual_seed(0)
    ours = um.vit.Attention(16, 4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
        x = torch.randn(2, 7, 16)
        torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_lenet5_has_the_papers_size():
    assert n_params(um.lenet5()) == 61_706
    assert um.lenet5()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


# ------------------------------------------------------------------- memory formats and mixed precision (CPU)

PRECISION = ["resnet18", "resnet50", "vgg16_bn", "densenet_small", "mobilenet_v2", "efficientnet", "vit_tiny"]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("name", PRECISION)
def test_channels_last_and_bf16_autocast_on_cpu(name):
    torch.manual_seed(0)
    size = 28 if name == "vit_tiny" else 32
    model = SMALL[name](size).eval()
    randomize_batch_norms(model)
    if name == "vit_tiny":
        nn.init.normal_(model.head.weight)  # ViTs start with a zero head
    x = torch.randn(4, 1, size, size)
    with torch.no_grad():
        ref = model(x)
        cl_model = model.to(memory_format=torch.channels_last)
        cl = cl_model(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = cl_model(x.to(memory_format=torch.channels_last))
    assert rel_error(cl, ref) < 1e-4
    assert bf.dtype == torch.bfloat16 and torch.isfinite(bf).all()
    assert rel_error(bf, ref) < 0.05, rel_error(bf, ref)


# --------------------------------------------------------------------------- accelerators and compilation


def _accelerator_check(device: torch.device, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = um.resnet18(10, in_channels=1, small_input=True, width=16).to(device).eval()
    x = torch.randn(4, 1, 32, 32, device=device)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            out = model(x.to(memory_format=torch.channels_last))
    assert out.dtype == dtype and rel_error(out.cpu(), ref.cpu()) < 0.05
    model.train()
    with torch.autocast(device.type, dtype=dtype):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_channels_last(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    _accelerator_check(torch.device("cuda"), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", LOADABLE)
def test_cuda_outputs_match_cpu(name):
    torch.manual_seed(0)
    model = getattr(um, name)(num_classes=10).eval()
    randomize_batch_norms(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda()).cpu()
    assert rel_error(out, ref) < 1e-3  # TF32 may be on


@pytest.mark.skipif(
    not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()), reason="needs Apple MPS"
)
def test_mps_forward_and_backward():
    _accelerator_check(torch.device("mps"), torch.float16)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("COURSE_COMPILE_TESTS") != "1",
    reason="torch.compile takes tens of seconds per model on a small CPU: "
    "set COURSE_COMPILE_TESTS=1 to run it",
)
@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "mobilenet_v2"])
def test_torch_compile_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = SMALL[name](28).eval()
    if name == "vit_tiny":
        nn.init.normal_(model.head.weight)  # ViTs start with a zero head
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        compiled = torch.compile(model)
        out = compiled(x)
    assert rel_error(out, ref) < 1e-4
