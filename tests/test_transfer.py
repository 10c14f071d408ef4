"""utils.transfer (chapter 09): freezing by stage on the course's backbones, discriminative parameter
groups (every trainable parameter once, the learning-rate ratios, frozen ones left out), embeddings
against the backbone's own forward, the linear probe against scikit-learn's LogisticRegression, k-NN
against KNeighborsClassifier, and AdaBN's statistics against forward hooks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import utils.models as M
from utils import transfer


def small_mobilenet(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return M.mobilenet_v2(num_classes, width_mult=0.25, small_input=True)


def small_resnet(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return M.resnet18(num_classes, in_channels=1, small_input=True, width=8)


def trainable_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in model.parameters() if p.requires_grad}


# ---- freezing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [small_mobilenet, small_resnet])
def test_freeze_backbone_leaves_the_head_and_the_last_stages(build):
    model = build()
    stages = model.stages
    for k in range(len(stages) + 1):
        transfer.freeze_backbone(model, train_stages=k)
        expected = {id(p) for p in model.get_classifier().parameters()}
        for stage in stages[len(stages) - k :]:
            expected |= {id(p) for p in stage.parameters()}
        assert trainable_ids(model) == expected
    transfer.unfreeze(model)
    assert trainable_ids(model) == {id(p) for p in model.parameters()}
    transfer.freeze(model)
    assert not trainable_ids(model)
    with pytest.raises(ValueError, match="train_stages"):
        transfer.freeze_backbone(model, train_stages=len(stages) + 1)
    with pytest.raises(TypeError, match="backbone contract"):
        transfer.freeze_backbone(nn.Linear(2, 2))


def test_freeze_batchnorm_keeps_running_statistics_through_fit():
    from utils.train import fit

    model = small_resnet()
    bns = transfer.freeze_batchnorm(model)
    assert bns and all(not m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    weights = model.conv1.weight.detach().clone()
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 4, (16,))
    fit(model, [(x, y)], epochs=1, device="cpu", progress=False, seed=0)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert not torch.equal(weights, model.conv1.weight)  # the convolutions trained
    transfer.freeze_batchnorm(model, affine=True)
    assert not any(p.requires_grad for m in bns for p in m.parameters())


# ---- discriminative parameter groups -------------------------------------------------------------


@pytest.mark.parametrize("build", [small_mobilenet, small_resnet])
def test_param_groups_cover_every_trainable_parameter_once(build):
    model = build()
    groups = transfer.discriminative_param_groups(model, 1e-2, 0.5, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    n = len(model.stages)
    assert [g["name"] for g in groups] == ["head", *[f"stage{i}" for i in range(n, 0, -1)], "stem"]
    for depth, g in enumerate(groups):
        assert g["lr"] == pytest.approx(1e-2 * 0.5**depth) and g["weight_decay"] == 0.01
    head = {id(p) for p in model.get_classifier().parameters()}
    assert {id(p) for p in groups[0]["params"]} == head
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.stages[-1].parameters()}
    # the optimizer accepts them, and each parameter moves by its own group's learning rate
    model.double()  # exact arithmetic for the comparison below
    groups = transfer.discriminative_param_groups(model, 1e-2, 0.5)  # no weight decay: a pure step
    opt = torch.optim.SGD(groups)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for g in groups:
        for p in g["params"]:
            torch.testing.assert_close(before[id(p)] - p.detach(), torch.full_like(p, g["lr"]))


def test_param_groups_leave_frozen_parameters_out():
    model = small_mobilenet()
    transfer.freeze_backbone(model, train_stages=2)
    groups = transfer.discriminative_param_groups(model, 3e-3, 0.1)
    assert [g["name"] for g in groups] == ["head", "stage5", "stage4"]
    assert {id(p) for g in groups for p in g["params"]} == trainable_ids(model)
    assert groups[2]["lr"] == pytest.approx(3e-5)
    every = transfer.discriminative_param_groups(model, 3e-3, 0.1, include_frozen=True)
    assert sum(len(g["params"]) for g in every) == len(list(model.parameters()))
    transfer.freeze(model)
    with pytest.raises(ValueError, match="no trainable"):
        transfer.discriminative_param_groups(model, 1e-3)
    with pytest.raises(ValueError, match="positive"):
        transfer.discriminative_param_groups(small_mobilenet(), 1e-3, 0.0)


def test_param_groups_put_parameters_outside_the_stages_with_the_stem():
    torch.manual_seed(0)
    vit = M.vit_tiny(num_classes=3)
    groups = transfer.discriminative_param_groups(vit, 1.0, 0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(vit.parameters()))
    staged = {id(p) for s in vit.stages for p in s.parameters()} | {
        id(p) for p in vit.get_classifier().parameters()
    }
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in vit.parameters()} - staged


# ---- embeddings, probe, k-NN ---------------------------------------------------------------------


def test_embed_equals_the_backbone_forward_and_restores_modes():
    model = small_mobilenet().train()
    x = torch.rand(10, 3, 32, 32)
    emb = transfer.embed(model, x, batch_size=4)
    model.eval()
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        maps = M.feature_maps(model, x)
    model.train()
    torch.testing.assert_close(emb, expected)
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(transfer.embed(model, x, stage=2), maps[2].mean(dim=(2, 3)))
    torch.testing.assert_close(transfer.embed(model, x, stage=-1), maps[-1].mean(dim=(2, 3)))
    ds = TensorDataset(x, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(transfer.embed(model, ds, batch_size=3), emb)
    torch.testing.assert_close(transfer.embed(model, DataLoader(ds, batch_size=6), progress=True), emb)
    with pytest.raises(ValueError, match="stage"):
        transfer.embed(model, x, stage=9)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        transfer.embed(model, x[0])


@pytest.mark.parametrize("c_sklearn,classes", [(1.0, 3), (0.05, 5), (10.0, 2)])
def test_linear_probe_matches_sklearn_logistic_regression(c_sklearn, classes):
    g = torch.Generator().manual_seed(classes)
    n, d = 120, 6
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = (centres[y] + torch.randn(n, d, generator=g)) * torch.linspace(0.5, 20, d) + 3  # uneven scales
    # scikit-learn fits one weight vector for two classes; the multinomial model's two vectors end up
    # opposite, w1 = -w0 = w / 2, so the same penalty on them is half as strong: l2 doubles to match
    l2 = (2 if classes == 2 else 1) / (c_sklearn * n)
    head = transfer.linear_probe(x, y, l2=l2, standardize=False)
    ref = LogisticRegression(C=c_sklearn, tol=1e-10, max_iter=10000).fit(
        x.numpy().astype(np.float64), y.numpy()
    )
    with torch.no_grad():
        probs = head(x).softmax(1).double().numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(x.numpy().astype(np.float64)), atol=2e-4)
    # standardised features: the same model as scikit-learn on standardised features, folded into the head
    head_std = transfer.linear_probe(x, y, l2=l2)
    xs = (x - x.mean(0)) / x.std(0, unbiased=False)
    ref_std = LogisticRegression(C=c_sklearn, tol=1e-10, max_iter=10000).fit(xs.double().numpy(), y.numpy())
    with torch.no_grad():
        probs_std = head_std(x).softmax(1).double().numpy()
    np.testing.assert_allclose(probs_std, ref_std.predict_proba(xs.double().numpy()), atol=2e-4)
    assert isinstance(head_std, nn.Linear) and head_std.weight.dtype == torch.float32


def test_linear_probe_edge_cases():
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    head = transfer.linear_probe(x, y, num_classes=4)  # classes never seen still get an output
    assert head.out_features == 4
    with pytest.raises(ValueError, match="labels"):
        transfer.linear_probe(x, y.float())
    with pytest.raises(ValueError, match=r"labels must lie"):
        transfer.linear_probe(x, y + 3, num_classes=4)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        transfer.linear_probe(x[None], y)


@pytest.mark.parametrize("metric,k", [("cosine", 1), ("cosine", 5), ("euclidean", 3), ("euclidean", 8)])
def test_knn_matches_sklearn(metric, k):
    g = torch.Generator().manual_seed(k)
    train, y = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g)
    query = torch.randn(25, 5, generator=g)
    ref = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(train.numpy(), y.numpy())
    got = transfer.knn_predict(train, y, query, k, metric=metric, batch_size=7)
    np.testing.assert_array_equal(got.numpy(), ref.predict(query.numpy()))


def test_knn_ties_go_to_the_smallest_label_and_bad_input():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = torch.tensor([3, 3, 1, 1])
    assert transfer.knn_predict(train, y, torch.tensor([[1.0, 1.0]]), 4).tolist() == [1]
    with pytest.raises(ValueError, match="k must"):
        transfer.knn_predict(train, y, train, 5)
    with pytest.raises(ValueError, match="metric"):
        transfer.knn_predict(train, y, train, 1, metric="manhattan")


# ---- AdaBN ---------------------------------------------------------------------------------------


class WithDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Sequential(nn.Conv2d(6, 4, 3, stride=2), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
        self.head = nn.Sequential(
            nn.Flatten(), nn.LazyLinear(8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
        )

    def forward(self, x):
        return self.head(self.conv2(self.drop(self.conv(x))))


def hooked_statistics(
    model: nn.Module, batches: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch-norm layer, the mean and unbiased variance of its inputs over all batches, recorded with
    hooks while the batch-norm layers normalise with batch statistics and everything else is in eval mode."""
    model = copy.deepcopy(model).eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    seen = {m: [] for m in bns}
    handles = [m.register_forward_hook(lambda m, i, o: seen[m].append(i[0].detach())) for m in bns]
    for m in bns:
        m.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in handles:
        h.remove()
    out = []
    for m in bns:
        values = torch.cat([v.transpose(0, 1).reshape(v.shape[1], -1) for v in seen[m]], dim=1).double()
        out.append((values.mean(1), values.var(1, unbiased=True)))
    return out


def test_adabn_statistics_equal_the_hooked_ones_and_nothing_else_changes():
    torch.manual_seed(0)
    model = WithDropout()
    model(torch.rand(2, 3, 9, 9))  # materialise the lazy layer
    model.train()
    data = torch.rand(23, 3, 9, 9) * 2 + 1  # a shifted domain
    batches = [data[i : i + 10] for i in range(0, 23, 10)]  # 10, 10, 3: unequal batches
    expected = hooked_statistics(model, batches)
    params = {k: v.clone() for k, v in model.named_parameters()}
    tracked = [m.num_batches_tracked.clone() for m in transfer.batchnorm_layers(model)]
    transfer.adabn(model, data, batch_size=10)
    for m, (mean, var) in zip(transfer.batchnorm_layers(model), expected):
        torch.testing.assert_close(m.running_mean.double(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.running_var.double(), var, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in params.items())
    assert all(m.training for m in model.modules())  # handed in train mode, back in train mode
    assert [m.momentum for m in transfer.batchnorm_layers(model)] == [0.1, 0.3, 0.1]
    assert all(
        torch.equal(a, m.num_batches_tracked) for a, m in zip(tracked, transfer.batchnorm_layers(model))
    )
    # a loader of (images, labels) gives the same statistics
    again = copy.deepcopy(model)
    transfer.adabn(again, DataLoader(TensorDataset(data, torch.zeros(23)), batch_size=10))
    for a, b in zip(transfer.batchnorm_layers(model), transfer.batchnorm_layers(again)):
        torch.testing.assert_close(a.running_var, b.running_var)


def test_adabn_undoes_an_affine_intensity_shift_at_the_first_layer():
    """A contrast and brightness change x -> a x + b (a > 0) is a per-channel affine change of a
    convolution's output (no padding here); the re-estimated statistics absorb it exactly, up to the
    batch norm's eps (made negligible here: it weighs more when the shift shrinks the variance)."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, eps=1e-12), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )
    x = torch.rand(64, 1, 8, 8)
    transfer.adabn(model, x)  # statistics of the source domain
    model.eval()
    with torch.no_grad():
        clean = model(x)
        shifted = model(0.3 * x + 0.4)
    assert (clean - shifted).abs().max() > 0.1
    transfer.adabn(model, 0.3 * x + 0.4)
    with torch.no_grad():
        torch.testing.assert_close(model(0.3 * x + 0.4), clean, atol=1e-4, rtol=1e-4)


def test_adabn_errors():
    with pytest.raises(ValueError, match="no batch-norm"):
        transfer.adabn(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.rand(4, 1, 5, 5))
    unused = nn.ModuleDict({"used": nn.BatchNorm2d(1), "unused": nn.BatchNorm2d(1)})

    class Partly(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = unused

        def forward(self, x):
            return self.parts["used"](x)

    with pytest.raises(ValueError, match="saw no input"):
        transfer.adabn(Partly(), torch.rand(4, 1, 5, 5))


def test_label_budget_widget_fits_on_the_picked_labels_only():
    import matplotlib

    matplotlib.use("Agg")
    from utils.widgets.transfer import label_budget_figure, per_class_indices

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(3).repeat_interleave(40)  # (120,)
    x = centres[y] + torch.randn(120, 8, generator=g)
    idx = per_class_indices(y, 4, seed=1)
    assert len(idx) == 12 and torch.bincount(y[idx]).tolist() == [4, 4, 4]
    assert torch.equal(idx, per_class_indices(y, 4, seed=1)) and not torch.equal(
        idx, per_class_indices(y, 4, 2)
    )
    assert len(per_class_indices(y, 100)) == 120  # a class with fewer gives all it has
    with pytest.raises(ValueError, match="per_class"):
        per_class_indices(y, 0)
    for method in ("linear probe", "kNN"):
        fig, acc = label_budget_figure(x, y, x, y, ["a", "b", "c"], per_class=4, method=method, k=3)
        assert acc > 0.9 and f"{acc:.1%}" in fig.axes[0].get_title()
        matplotlib.pyplot.close(fig)
    shuffled = y[torch.randperm(120, generator=g)]  # labels unrelated to the features: near chance
    fig, acc = label_budget_figure(x, shuffled, x, y, ["a", "b", "c"], per_class=2, method="kNN", k=1)
    matplotlib.pyplot.close(fig)
    assert acc < 0.8
    with pytest.raises(ValueError, match="method"):
        label_budget_figure(x, y, x, y, ["a", "b", "c"], method="svm")
