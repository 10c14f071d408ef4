"""utils.interpret (chapter 08): Grad-CAM against an independent implementation with backward hooks,
saliency against the analytic gradient of a linear model, FGSM's guarantees, feature maps, the
confusion summary, the plots, and chapter 08's widget."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from utils import interpret  # noqa: E402


class Fixed(nn.Module):
    """A small fixed CNN: features (two conv blocks), then a head; ``block2`` is the Grad-CAM layer."""

    def __init__(self, in_channels: int = 3, classes: int = 5):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())  # (N, 8, H/2, W/2)
        self.head = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, classes),
        )

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def fixed_model(seed: int = 0, **kw) -> Fixed:
    torch.manual_seed(seed)
    return Fixed(**kw).eval()


def images(n=3, c=3, h=12, w=10, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def reference_grad_cam(
    model: Fixed, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM the straightforward way: a forward hook keeps A, a full backward hook keeps dy/dA."""
    store = {}
    h1 = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("dA", go[0]))
    try:
        model.zero_grad()
        logits = model(x.clone().requires_grad_(True))
        logits[torch.arange(len(x)), classes].sum().backward()
    finally:
        h1.remove()
        h2.remove()
    maps = []
    for i in range(len(x)):  # one image at a time, written out with loops over channels
        a, g = store["A"][i].detach(), store["dA"][i]
        cam = torch.zeros(a.shape[1:])
        for k in range(a.shape[0]):
            cam += g[k].mean() * a[k]
        cam = cam.clamp(min=0)
        cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        maps.append(cam / cam.max() if cam.max() > 0 else cam)
    return torch.stack(maps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grad_cam_matches_a_hook_based_reference(seed):
    model = fixed_model(seed)
    x = images(seed=seed)
    classes = torch.tensor([0, 3, 4])
    ours = interpret.grad_cam(model, model.block2, x, classes)
    ref = reference_grad_cam(model, model.block2, x, classes)
    assert ours.shape == (3, 12, 10)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_grad_cam_matches_splitting_the_model_by_hand():
    """No hooks at all: run the two halves of the model separately and differentiate the head."""
    model = fixed_model(5)
    x = images(2, seed=5)
    a = model.block2(model.block1(x)).detach().requires_grad_(True)  # (2, 8, 6, 5)
    logits = model.head(a)
    cls = logits.argmax(dim=1)
    (g,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), a)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(12, 10), mode="bilinear", align_corners=False)[:, 0].detach()
    cam = cam / cam.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(
        interpret.grad_cam(model, model.block2, x), cam, atol=1e-5, rtol=1e-4
    )  # None: predicted


def test_grad_cam_invariants_and_no_side_effects():
    model = fixed_model(3)
    x = images(4, seed=3)
    for p in model.parameters():
        p.grad = None
    cam = interpret.grad_cam(model, model.block2, x, 1)
    assert cam.shape == x.shape[:1] + x.shape[2:]  # upsampled to the input size
    assert cam.min() >= 0 and (cam.amax(dim=(1, 2)) - 1).abs().max() < 1e-6  # in [0, 1], peak exactly 1
    assert not cam.requires_grad
    assert all(p.grad is None for p in model.parameters())  # parameter gradients untouched
    assert not model.block2._forward_hooks and not model.block2._backward_hooks  # hooks removed
    assert not model.training  # mode unchanged
    # class-specific: another class gives another map
    assert not torch.allclose(cam, interpret.grad_cam(model, model.block2, x, 2))
    # works under no_grad and for a frozen model
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        torch.testing.assert_close(interpret.grad_cam(model, model.block2, x, 1), cam)


def test_grad_cam_of_a_class_with_only_negative_evidence_is_zero_not_nan():
    model = fixed_model(4)
    with torch.no_grad():
        model.head[-1].weight[2] = -model.head[-1].weight[2].abs()  # class 2 only loses from every channel
    cam = interpret.grad_cam(model, model.head[1], images(2, seed=4), 2)  # the ReLU's output: non-negative A
    assert torch.isfinite(cam).all() and (cam == 0).all()


def test_grad_cam_errors():
    model = fixed_model()
    with pytest.raises(ValueError, match="not a submodule"):
        interpret.grad_cam(model, nn.Conv2d(3, 3, 1), images())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        interpret.grad_cam(model, model.block2, images()[0])
    with pytest.raises(ValueError, match="feature maps"):
        interpret.grad_cam(model, model.head[-1], images())  # a linear layer outputs (N, K)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        interpret.grad_cam(model, model.block2, images(), 5)
    with pytest.raises(ValueError, match="one class per image"):
        interpret.grad_cam(model, model.block2, images(), [0, 1])


def test_saliency_of_a_linear_model_is_the_absolute_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 6))
    x = torch.rand(2, 3, 4, 5)
    sal = interpret.saliency(model, x, torch.tensor([1, 4]))
    w = model[1].weight.detach().reshape(6, 3, 4, 5)
    expected = torch.stack([w[1].abs().amax(dim=0), w[4].abs().amax(dim=0)])  # max over colour channels
    torch.testing.assert_close(sal, expected)
    assert interpret.saliency(model, x).shape == (2, 4, 5)


def test_saliency_matches_autograd_on_a_cnn():
    model = fixed_model(1)
    x = images(2, seed=1)
    xr = x.clone().requires_grad_(True)
    out = model(xr)
    out[:, 3].sum().backward()
    torch.testing.assert_close(interpret.saliency(model, x, 3), xr.grad.abs().amax(dim=1))


def test_fgsm_increases_the_loss_and_respects_eps_and_range():
    model = fixed_model(2)
    x = images(8, seed=2)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels at the edges of the range
    before = x.clone()
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    for eps in (0.01, 0.05, 0.3):
        x_adv = interpret.fgsm(model, x, y, eps)
        assert torch.equal(x, before)  # input untouched
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert torch.equal(interpret.fgsm(model, x, y, 0.0), x)


def test_fgsm_on_a_linear_model_moves_along_the_sign_of_the_analytic_gradient():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1 * 6 * 6, 4))
    x = torch.rand(3, 1, 6, 6) * 0.8 + 0.1  # away from the edges: no clamping
    y = torch.tensor([0, 2, 3])
    w = model[1].weight.detach()
    p = model(x).softmax(dim=1).detach()
    grad = ((p - F.one_hot(y, 4)) @ w).reshape(x.shape) / 3  # d mean CE / dx, by hand
    torch.testing.assert_close(interpret.fgsm(model, x, y, 0.05), x + 0.05 * grad.sign())


def test_fgsm_errors():
    model = fixed_model()
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="clamp range"):
        interpret.fgsm(model, images() * 3, y, 0.1)
    with pytest.raises(ValueError, match="eps"):
        interpret.fgsm(model, images(), y, -0.1)
    with pytest.raises(ValueError, match="labels"):
        interpret.fgsm(model, images(), y[:2], 0.1)


def test_feature_maps_are_the_outputs_of_the_layers():
    model = fixed_model()
    x = images(2)
    maps = interpret.feature_maps(model, ["block1", "block2", "head.1"], x)
    assert list(maps) == ["block1", "block2", "head.1"]
    with torch.no_grad():
        a1 = model.block1(x)
        a2 = model.block2(a1)
        torch.testing.assert_close(maps["block1"], a1)
        torch.testing.assert_close(maps["block2"], a2)
        torch.testing.assert_close(maps["head.1"], F.relu(model.head[0](a2)))
    assert all(not m._forward_hooks for m in model.modules())
    by_module = interpret.feature_maps(model, {"second": model.block2}, x)
    torch.testing.assert_close(by_module["second"], maps["block2"])
    with pytest.raises(ValueError, match="no submodule"):
        interpret.feature_maps(model, ["block9"], x)


def test_most_confused():
    cm = torch.tensor([[5, 3, 0], [1, 7, 4], [3, 0, 9]])
    assert interpret.most_confused(cm, k=3) == [(1, 2, 4), (0, 1, 3), (2, 0, 3)]
    assert interpret.most_confused(cm, k=10, classes=["a", "b", "c"])[-1] == ("b", "a", 1)
    assert len(interpret.most_confused(cm, k=10)) == 4  # zeros are left out
    with pytest.raises(ValueError, match="square"):
        interpret.most_confused(torch.zeros(2, 3))


def test_plots_return_figures():
    model = fixed_model()
    x = images(3)
    fig = interpret.plot_filters(model.block1[0].weight, ncols=3)
    assert len([a for a in fig.axes if a.images]) == 6
    fig2 = interpret.plot_feature_maps(
        interpret.feature_maps(model, ["block1", "block2"], x), channels=4, image=x[0]
    )
    assert len(fig2.axes) == 2 * 5
    cam = interpret.grad_cam(model, model.block2, x)
    fig3 = interpret.plot_heatmaps(
        x, {"Grad-CAM": cam, "saliency": interpret.saliency(model, x)}, titles=["a", "b", "c"]
    )
    assert len(fig3.axes) == 9
    with pytest.raises(ValueError, match="must have shape"):
        interpret.plot_heatmaps(x, {"bad": cam[:2]})
    plt.close("all")


def test_widget_builds_and_updates(monkeypatch):
    pytest.importorskip("ipywidgets")
    from utils.widgets import training

    calls = []
    real = training.explorer_figure

    def recording(*args):
        calls.append(args[3:])  # (label, classes, class_idx, eps)
        return real(*args)

    monkeypatch.setattr(training, "explorer_figure", recording)
    model = fixed_model(in_channels=1)
    x = images(4, c=1, h=16, w=16)
    box = training.interpretation_explorer(model, model.block2, x, torch.tensor([0, 1, 2, 3]), list("abcde"))
    index, klass, eps = box.children[0].children
    assert len(calls) == 1 and calls[0][2] is None  # drawn once on creation, for the predicted class
    index.value, klass.value, eps.value = 2, 3, 0.2  # each change redraws
    assert len(calls) == 4 and calls[-1][0] == 2 and calls[-1][2:] == (3, 0.2)
    fig = real(model, model.block2, x[1], 1, list("abcde"), None, 0.1)
    assert len(fig.axes) == 4
    plt.close("all")
