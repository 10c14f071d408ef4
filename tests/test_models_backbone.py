"""The backbone contract of utils.models (issue 8, section 3): forward_features / forward_head, stem and
stages, stage_channels / stage_strides, num_features, reset_classifier, feature_maps, and the builders'
calling convention (num_classes first, keywords after it).

Every builder is checked at its default size on the ``meta`` device (shapes only: VGG-19 and
ViT-B/16 cost nothing there), and every family, with the ``small_input`` variants, on real tensors
in small widths, where the numbers must agree.
"""

from __future__ import annotations

import importlib
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import utils.models as um
from utils.models import feature_maps

NOT_BUILDERS = {"compound_scaling", "feature_maps", "get_weights", "list_weights", "load_pretrained"}
BUILDERS = sorted(n for n in um.__all__ if n[0].islower() and n not in NOT_BUILDERS)
# the builders whose first argument picks the architecture (documented exceptions)
ARCHITECTURE_FIRST = {"resnet_cifar"}
# unpadded convolutions and pools lose a few border pixels: how far below ceil(H / stride) a map may be
SHRINK = {um.LeNet5: 2, um.AlexNet: 1}


def default_input_size(model: nn.Module) -> int:
    return model.img_size if isinstance(model, um.VisionTransformer) else 64


def check_stage_shapes(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The maps of feature_maps have the declared channels and strides; returns them."""
    maps = feature_maps(model, x)
    assert len(maps) == len(model.stages) == len(model.stage_channels) == len(model.stage_strides) > 0
    assert list(model.stage_strides) == sorted(model.stage_strides), "strides grow from stage to stage"
    size = x.shape[-1]
    shrink = SHRINK.get(type(model), 0)
    for i, (m, c, s) in enumerate(zip(maps, model.stage_channels, model.stage_strides)):
        assert m.shape[:2] == (x.shape[0], c), f"stage {i}: {tuple(m.shape)}, declared {c} channels"
        expected = math.ceil(size / s)
        assert expected - shrink <= m.shape[-1] <= expected and m.shape[-2] == m.shape[-1], (
            f"stage {i}: {tuple(m.shape)} at {size} px, declared stride {s}"
        )
    return maps


def test_utils_models_exports_every_builder_of_the_families():
    helpers = {"compound_scaling", "efficientnet", "stochastic_depth", "state_dict_from_torchvision"}
    modules = [
        importlib.import_module(f"utils.models.{m}")
        for m in (
            "lenet",
            "alexnet",
            "vgg",
            "googlenet",
            "resnet",
            "densenet",
            "mobilenet",
            "squeeze_excitation",
            "efficientnet",
            "vit",
        )
    ]
    defined = {n for m in modules for n in m.__all__ if n[0].islower() and n not in helpers}
    assert defined == set(BUILDERS)


@pytest.mark.parametrize("name", BUILDERS)
def test_every_builder_follows_the_contract_at_its_default_size(name):
    with torch.device("meta"):
        model = getattr(um, name)().eval()
        assert isinstance(model, um.Backbone)
        size = default_input_size(model)
        x = torch.empty(2, model.in_channels, size, size)
        maps = check_stage_shapes(model, x)
        features = model.forward_features(x)
        if isinstance(model, um.VisionTransformer):
            assert features.shape == (2, 1 + (size // model.patch_size) ** 2, model.num_features)
        else:
            assert features.shape == (2, model.num_features, *maps[-1].shape[-2:])
            assert model.stage_channels[-1] == model.num_features
        # forward == forward_head(forward_features) is checked on real numbers below; one pass is enough here
        assert model.forward_head(features).shape == (2, model.num_classes)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(7)
        assert model.forward_head(features).shape == (2, 7) and model.num_classes == 7
        model.reset_classifier(0)
        assert model.forward_head(features).shape == (2, model.num_features)


# --------------------------------------------------------------------------- the numbers, family by family

# name -> (builder, input channels, input size): small widths, every family and small_input variant
FAMILIES = {
    "lenet5": (lambda: um.lenet5(), 1, 64),
    "lenet5 relu/max": (lambda: um.lenet5(activation="relu", pool="max"), 1, 32),
    "alexnet": (lambda: um.alexnet(10, hidden=32), 3, 64),
    "alexnet small": (lambda: um.alexnet(10, in_channels=1, small_input=True, hidden=32), 1, 32),
    "vgg11": (lambda: um.vgg11(10, width=8, hidden=32), 3, 64),
    "vgg16_bn small": (lambda: um.vgg16_bn(10, in_channels=1, small_input=True, width=8), 1, 32),
    "googlenet": (lambda: um.googlenet(10), 3, 64),
    "googlenet small": (lambda: um.googlenet(10, in_channels=1, small_input=True), 1, 16),
    "resnet18": (lambda: um.resnet18(10, width=8), 3, 64),
    "resnet50 small": (lambda: um.resnet50(10, in_channels=1, small_input=True, width=8), 1, 32),
    "preact_resnet18": (lambda: um.preact_resnet18(10, small_input=True, width=8, dropout=0.2), 3, 32),
    "preact_resnet50": (lambda: um.preact_resnet50(10, width=8), 3, 64),
    "se_resnet18": (lambda: um.se_resnet18(10, small_input=True, width=16), 3, 32),
    "se_resnet50": (lambda: um.se_resnet50(10, width=16), 3, 64),
    "resnet_cifar": (lambda: um.resnet_cifar(14, num_classes=10, width=8), 3, 32),
    "plain_cifar": (lambda: um.resnet_cifar(14, num_classes=10, width=8, residual=False), 3, 32),
    "densenet": (lambda: um.DenseNet(8, (2, 2, 2, 2), 16, num_classes=10), 3, 64),
    "densenet_small": (lambda: um.densenet_small(growth_rate=6, block_config=(2, 2, 2)), 1, 32),
    "mobilenet_v2": (lambda: um.mobilenet_v2(10, width_mult=0.25), 3, 64),
    "mobilenet_v2 small": (
        lambda: um.mobilenet_v2(10, in_channels=1, small_input=True, width_mult=0.25),
        1,
        32,
    ),
    "efficientnet": (lambda: um.EfficientNet(0.25, 0.25, 10), 3, 64),
    "efficientnet small": (lambda: um.EfficientNet(0.25, 0.25, 10, in_channels=1, small_input=True), 1, 32),
    "vit_tiny": (lambda: um.vit_tiny(dim=32, depth=2), 1, 28),
    "vit 64 px": (lambda: um.vit_tiny(10, img_size=64, patch_size=16, in_channels=3, dim=32, depth=3), 3, 64),
}


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and a non-zero ViT head, so that every part shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if isinstance(model, um.VisionTransformer):
            model.head.weight.normal_(generator=g)
    return model.eval()


@pytest.fixture(params=list(FAMILIES))
def family(request):
    build, channels, size = FAMILIES[request.param]
    torch.manual_seed(0)
    model = randomize(build())
    x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def test_forward_is_forward_head_of_forward_features(family):
    model, x = family
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), logits, rtol=0, atol=0)
    assert logits.shape == (2, model.num_classes) and logits.std() > 0


def test_stem_then_stages_then_finalize_give_the_features(family):
    model, x = family
    with torch.no_grad():
        maps = check_stage_shapes(model, x)
        h = model.stem(x)
        for i, stage in enumerate(model.stages):
            h = stage(h)
            torch.testing.assert_close(maps[i], model.as_feature_map(h), rtol=0, atol=0)
        torch.testing.assert_close(model.finalize(h), model.forward_features(x), rtol=0, atol=0)
    assert len({id(p) for s in model.stages for p in s.parameters()}) > 0


def test_stages_and_stem_hold_every_backbone_parameter_once(family):
    model, _ = family
    head = {id(p) for p in model.get_classifier().parameters()}
    if isinstance(model, (um.LeNet5, um.AlexNet, um.VGG)):
        head = {id(p) for p in model.classifier.parameters()}
    stem = model.stem
    seen = [id(p) for p in (stem.parameters() if isinstance(stem, nn.Module) else [])]
    seen += [id(p) for s in model.stages for p in s.parameters()]
    assert len(seen) == len(set(seen)), "a parameter appears in two stages"
    rest = {id(p) for p in model.parameters()} - set(seen) - head
    if isinstance(model, um.VisionTransformer):  # the stem is a method: its parameters are the ViT's own
        rest -= {id(model.cls_token), id(model.pos_embed), *(id(p) for p in model.patch_embed.parameters())}
        rest -= {id(p) for p in model.norm.parameters()}
    for extra in ("bn_final", "features.norm5"):
        module = model.get_submodule(extra) if _has(model, extra) else None
        if module is not None:
            rest -= {id(p) for p in module.parameters()}
    assert not rest, "parameters outside the stem, the stages, the final norm and the classifier"


def _has(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


def test_reset_classifier_gives_embeddings_and_new_heads(family):
    model, x = family
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = features[:, 0] if isinstance(model, um.VisionTransformer) else features.mean((2, 3))
        model.reset_classifier(0)
        embeddings = model(x)
        assert model.num_classes == 0 and embeddings.shape == (2, model.num_features)
        torch.testing.assert_close(embeddings, pooled, rtol=1e-5, atol=1e-6)
        model.reset_classifier(5)
        logits = model(x)
        head = model.get_classifier()
        linear = head[-1] if isinstance(head, nn.Sequential) else head
        assert isinstance(linear, nn.Linear)
        assert (linear.in_features, linear.out_features) == (model.num_features, 5)
        torch.testing.assert_close(logits, F.linear(pooled, linear.weight, linear.bias), rtol=1e-5, atol=1e-6)
    model.train()
    model(x).sum().backward()  # the new head learns, and so does the backbone
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_reset_classifier_keeps_the_dropout_and_checks_its_argument():
    model = um.mobilenet_v2(10, width_mult=0.25)
    model.reset_classifier(3)
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[1].out_features == 3
    assert list(model.state_dict())[-2:] == ["classifier.1.weight", "classifier.1.bias"]
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        model.reset_classifier(-1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        model.reset_classifier(2.0)


def test_vit_feature_maps_are_the_patch_tokens_on_their_grid():
    model = randomize(um.vit_tiny(10, img_size=32, patch_size=8, in_channels=3, dim=16, depth=2))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        maps = feature_maps(model, x)
        tokens = model.stages[1](model.stages[0](model.embed(x)))  # (N, 1 + 16, dim)
    assert model.stage_strides == [8, 8] and model.stage_channels == [16, 16]
    assert maps[-1].shape == (2, 16, 4, 4)
    torch.testing.assert_close(maps[-1][:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # row 1, column 2


def test_feature_maps_refuses_a_model_without_the_contract():
    with pytest.raises(TypeError, match="backbone contract"):
        feature_maps(nn.Conv2d(3, 3, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="input channels"):
        feature_maps(um.resnet18(width=8), torch.zeros(1, 1, 32, 32))


# --------------------------------------------------------------------------- how builders are called


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_take_num_classes_first_and_keywords_after_it(name):
    builder = getattr(um, name)
    params = list(inspect.signature(builder).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if name in ARCHITECTURE_FIRST:
        assert positional == ["depth", "num_classes"]
    else:
        assert positional == ["num_classes"], positional
        with pytest.raises(TypeError, match="only positional argument"):
            builder(10, 3)
    assert "weights" in inspect.signature(builder).parameters


def test_vit_tiny_old_positional_call_fails_clearly_and_keywords_work():
    with pytest.raises(TypeError, match=r"vit_tiny\(\) takes num_classes as its only positional argument"):
        um.vit_tiny(28, 4, 10, 1)  # the old order (img_size, patch_size, num_classes, in_channels)
    model = um.vit_tiny(7, img_size=32, patch_size=8, in_channels=3)
    assert (model.num_classes, model.img_size, model.patch_size, model.in_channels) == (7, 32, 8, 3)
    chapter_07 = um.vit_tiny(img_size=28, patch_size=4, num_classes=10, in_channels=1)
    assert chapter_07(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_weights_on_a_builder_without_them_raise():
    with pytest.raises(ValueError, match="are weights for mobilenet_v2, not for lenet5"):
        um.lenet5(weights="mobilenet_v2.imagenet1k_v1")
    with pytest.raises(ValueError, match="unknown weights 'resnet18.imagenet22k'"):
        um.resnet18(weights="resnet18.imagenet22k")
