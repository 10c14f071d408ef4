"""utils.debug (chapter 08): the debugging checklist detects what it is meant to detect."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from utils import debug  # noqa: E402
from utils.train import History  # noqa: E402


def data(n=50, d=20, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def mlp(d=20, c=10, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, c))


def loader(x, y, batch_size=16):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_expected_initial_loss_is_ln_c():
    assert debug.expected_initial_loss(10) == pytest.approx(2.302585, abs=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        debug.expected_initial_loss(1)


def test_initial_loss_check_measures_the_mean_over_samples_in_eval_mode():
    x, y = data(50)
    model = mlp(dropout=0.5).train()
    result = debug.initial_loss_check(model, loader(x, y, 16), 10)  # batches of 16, 16, 16, 2
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)
    loss, ok = result  # unpacks as a pair
    assert ok and isinstance(ok, bool)
    model.train()
    debug.initial_loss_check(model, loader(x, y), 10)
    assert model.training and model[2].training  # modes restored


def test_initial_loss_check_detects_a_final_layer_with_a_large_bias():
    x, y = data(64)
    model = mlp()
    with torch.no_grad():
        model[-1].bias.copy_(torch.linspace(-8, 8, 10))
    loss, ok = debug.initial_loss_check(model, loader(x, y), 10)
    assert not ok and loss > 2 * math.log(10)


def test_initial_loss_check_flags_a_loss_far_below_ln_c():
    x, _ = data(64)
    y = torch.zeros(64, dtype=torch.long)
    model = mlp()
    with torch.no_grad():
        model[-1].bias[0] = 10.0  # confidently predicts the (only) class: a suspiciously low loss
    loss, ok = debug.initial_loss_check(model, loader(x, y), 10)
    assert loss < 0.1 and not ok


def test_initial_loss_check_errors():
    x, y = data(8)
    with pytest.raises(ValueError, match=r"logits of shape \(B, 5\)"):
        debug.initial_loss_check(mlp(), loader(x, y), 5)
    with pytest.raises(ValueError, match="no samples"):
        debug.initial_loss_check(mlp(), [], 10)


def test_overfit_one_batch_reaches_near_zero_loss_without_changing_the_model():
    x, y = data(32)
    model = mlp(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = debug.overfit_one_batch(model, (x, y), steps=300, lr=1e-2, target_loss=0.01)
    assert result.passed and result.final_loss < 0.01 and result.accuracy == 1.0
    assert result.steps < 300 and result.losses[0] > 1.5  # stopped early, from about ln 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_overfit_one_batch_fails_when_the_graph_is_cut():
    class Detached(nn.Module):  # a bug: the features are detached, only the last layer learns
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(20, 4), nn.ReLU())  # a 4-unit bottleneck
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.features(x).detach())

    torch.manual_seed(0)
    x, y = data(64)
    result = debug.overfit_one_batch(Detached(), (x, y), steps=150, lr=1e-2)
    assert not result.passed and result.final_loss > 0.5


def test_gradient_flow_reports_per_layer_norms():
    x, y = data(16)
    model = mlp(seed=2)
    report = debug.gradient_flow(model, (x, y))
    assert [g.name for g in report] == ["0.weight", "3.weight"]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for g, layer in zip(report, (model[0], model[3])):
        assert g.grad_norm == pytest.approx(layer.weight.grad.norm().item(), rel=1e-5)
        assert g.param_norm == pytest.approx(layer.weight.norm().item(), rel=1e-6)
        assert g.reached and g.ratio == pytest.approx(g.grad_norm / g.param_norm)
    model.zero_grad(set_to_none=True)
    debug.gradient_flow(model, (x, y))
    assert all(p.grad is None for p in model.parameters())  # the model's .grad is untouched
    assert len(debug.gradient_flow(model, (x, y), weights_only=False)) == 4  # biases too


def test_gradient_flow_finds_layers_without_gradient_and_leaves_batchnorm_alone():
    class Cut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = self.bn(self.conv(x)).relu().detach()  # the bug
            return self.fc(h.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Cut()
    stats = model.bn.running_mean.clone()
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    report = {g.name: g for g in debug.gradient_flow(model, (x, y))}
    assert not report["conv.weight"].reached and report["conv.weight"].grad_norm == 0.0
    assert report["fc.weight"].reached and report["fc.weight"].grad_norm > 0
    assert torch.equal(model.bn.running_mean, stats)  # ran on a copy
    fig = debug.plot_gradient_flow({"cut": list(report.values()), "again": list(report.values())})
    assert fig.axes and fig.axes[0].get_yscale() == "log"
    plt.close("all")


def test_gradient_flow_shows_vanishing_gradients_in_a_deep_sigmoid_network():
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [nn.Linear(20, 20), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(20, 10))
    report = debug.gradient_flow(model, data(64))
    assert report[0].grad_norm < 1e-2 * report[-1].grad_norm  # the input side gets far less


def _history(train, val):
    return History(
        train_loss=list(train),
        val_loss=list(val),
        train_acc=[0.0] * len(train),
        val_acc=[0.0] * len(train),
        lr=[0.0] * len(train),
        epoch_time=[0.0] * len(train),
    )


def test_diagnose_curves():
    assert debug.diagnose_curves(_history([2.3, 1.5, 1.0, 0.8], [2.2, 1.6, 1.2, 1.1])).startswith("healthy")
    assert debug.diagnose_curves(_history([2.3, 1.0, 0.5, 0.2, 0.1], [2.0, 1.1, 1.2, 1.4, 1.7])).startswith(
        "overfitting"
    )
    assert "epoch 2" in debug.diagnose_curves(_history([2.3, 1.0, 0.5, 0.2, 0.1], [2.0, 1.1, 1.2, 1.4, 1.7]))
    assert debug.diagnose_curves(_history([2.3, 2.3, 2.29], [2.3, 2.3, 2.3])).startswith("not learning")
    assert debug.diagnose_curves(_history([2.3, 5.0, float("nan")], [2.3, 9.0, float("nan")])).startswith(
        "diverged"
    )
    assert debug.diagnose_curves({"train_loss": [1.0, 0.5]}).startswith("healthy")
    assert debug.diagnose_curves({"train_loss": [1.0]}).startswith("too short")
    with pytest.raises(ValueError, match="train_loss"):
        debug.diagnose_curves({"val_loss": [1.0, 0.5]})
