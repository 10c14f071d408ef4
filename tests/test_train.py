"""utils.train: the loop against a hand-written one, history, schedulers, early stopping,
mixed precision, argument checks, and exact resumption from a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from utils.train import Classification, History, evaluate, fit, load_checkpoint, predict, save_checkpoint

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------------------------------------
# Tiny data and models
# ---------------------------------------------------------------------------------------------
def blobs(n=96, d=6, classes=3, seed=0):
    """Three well separated Gaussian blobs: a linear model reaches ~100 % accuracy."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = 3.0 * torch.randn(classes, d, generator=g)
    x = centers[y] + 0.5 * torch.randn(n, d, generator=g)
    return TensorDataset(x, y)


def mlp(d=6, classes=3, dropout=0.3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, classes))


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


class InterruptingLoader:
    """Wraps a DataLoader and raises after ``after`` batches in total, like a kernel interrupt."""

    def __init__(self, loader, after):
        self.loader, self.after, self.seen = loader, after, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if self.seen == self.after:
                raise Interrupt
            self.seen += 1
            yield batch


# ---------------------------------------------------------------------------------------------
# The loop itself
# ---------------------------------------------------------------------------------------------
def test_fit_equals_a_hand_written_loop():
    ds = blobs()
    loader = DataLoader(ds, batch_size=20)  # no shuffling, last batch smaller
    model, reference = mlp(dropout=0.0), mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)

    fit(model, loader, epochs=3, optimizer=opt, device="cpu", progress=False)
    for _ in range(3):
        for x, y in loader:
            ref_opt.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            ref_opt.step()
    assert params_equal(model, reference)


def test_history_records_sample_weighted_means_lr_and_time():
    ds = blobs(n=50)
    x, y = ds.tensors
    model = mlp(dropout=0.0)
    loader = DataLoader(ds, batch_size=16)  # batches of 16, 16, 16, 2
    # lr = 0 leaves the model unchanged, so the epoch loss must be the loss over the whole set
    hist = fit(
        model,
        loader,
        loader,
        epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        device="cpu",
        progress=False,
    )
    with torch.no_grad():
        logits = model(x)
    full_loss = F.cross_entropy(logits, y).item()
    full_acc = (logits.argmax(1) == y).float().mean().item()
    assert isinstance(hist, History) and len(hist) == hist.epochs == 2
    assert hist.train_loss == pytest.approx([full_loss] * 2, rel=1e-6)
    assert hist.val_loss == pytest.approx([full_loss] * 2, rel=1e-6)
    assert hist.train_acc == pytest.approx([full_acc] * 2) and hist.val_acc == pytest.approx([full_acc] * 2)
    assert hist.lr == [0.0, 0.0]
    assert all(t > 0 for t in hist.epoch_time)
    d = hist.as_dict()
    assert set(d) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "best_epoch"}
    assert History.from_dict(d) == hist


def test_fit_learns_and_evaluate_agrees_with_last_epoch():
    train, val = blobs(seed=0), blobs(n=60, seed=0)
    model = mlp()
    hist = fit(
        model,
        DataLoader(train, batch_size=16, shuffle=True),
        DataLoader(val, batch_size=32),
        epochs=6,
        lr=0.02,
        device="cpu",
        progress=False,
        seed=0,
    )
    assert hist.val_acc[-1] > 0.9 and hist.train_loss[-1] < hist.train_loss[0]
    assert hist.best_epoch == min(range(6), key=hist.val_loss.__getitem__)
    result = evaluate(model, DataLoader(val, batch_size=7))
    assert result["loss"] == pytest.approx(hist.val_loss[-1], rel=1e-5)
    assert result["accuracy"] == pytest.approx(hist.val_acc[-1])


def test_no_val_loader_gives_nan_val_entries():
    hist = fit(mlp(), DataLoader(blobs(), batch_size=32), epochs=2, device="cpu", progress=False)
    assert len(hist.val_loss) == 2 and all(math.isnan(v) for v in hist.val_loss + hist.val_acc)
    assert hist.best_epoch is None


def test_regression_loss_gives_nan_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])  # (N, 1) float targets
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = nn.Linear(3, 1)
    hist = fit(model, loader, loader, epochs=5, lr=0.1, loss_fn=F.mse_loss, device="cpu", progress=False)
    assert all(math.isnan(a) for a in hist.train_acc + hist.val_acc)
    assert hist.val_loss[-1] < 0.5 * hist.val_loss[0]
    result = evaluate(model, loader, loss_fn=F.mse_loss)
    assert math.isnan(result["accuracy"]) and result["loss"] == pytest.approx(hist.val_loss[-1], rel=1e-5)


def test_per_epoch_scheduler_and_plateau_scheduler():
    loader = DataLoader(blobs(), batch_size=32)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = fit(
        model,
        loader,
        epochs=3,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1),
        device="cpu",
        progress=False,
    )
    assert hist.lr == pytest.approx([0.1, 0.01, 0.001])

    # a validation set with shuffled labels gets worse as training fits the real ones
    x, y = blobs().tensors
    bad_val = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=32)
    model = mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    hist = fit(
        model, loader, bad_val, epochs=3, optimizer=opt, scheduler=plateau, device="cpu", progress=False
    )
    assert hist.val_loss[1] > hist.val_loss[0]
    assert hist.lr == pytest.approx([0.2, 0.2, 0.1])


def test_onecycle_is_stepped_every_batch():
    loader = DataLoader(blobs(), batch_size=16)  # 6 batches per epoch
    built = []

    def one_cycle(opt):
        built.append(torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=3 * len(loader)))
        return built[0]

    hist = fit(mlp(), loader, epochs=3, scheduler=one_cycle, device="cpu", progress=False)
    assert built[0].last_epoch == 3 * len(loader)
    assert hist.lr[0] == pytest.approx(0.05 / 25)  # OneCycleLR starts at max_lr / div_factor
    assert hist.lr[1] > hist.lr[0] and hist.lr[2] < hist.lr[1]


def test_early_stopping_stops_and_restores_best_weights(tmp_path):
    x, y = blobs().tensors
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    bad_val = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=32)  # gets worse every epoch
    model = mlp(dropout=0.0)
    ckpt = tmp_path / "run.pt"
    hist = fit(
        model,
        loader,
        bad_val,
        epochs=20,
        lr=0.05,
        early_stopping=2,
        checkpoint=ckpt,
        device="cpu",
        progress=False,
    )
    assert hist.best_epoch == 0 and hist.stopped_early and len(hist) == 3
    # the model is back at the weights of epoch 1, not those of the last epoch
    assert evaluate(model, bad_val)["loss"] == pytest.approx(hist.val_loss[0], rel=1e-6)
    assert evaluate(model, bad_val)["loss"] < hist.val_loss[-1]

    # resuming a finished run trains nothing and gives the same best weights
    other = mlp(dropout=0.0, seed=1)
    again = fit(
        other,
        loader,
        bad_val,
        epochs=20,
        lr=0.05,
        early_stopping=2,
        checkpoint=ckpt,
        resume=True,
        device="cpu",
        progress=False,
    )
    assert again.train_loss == hist.train_loss and params_equal(other, model)


def test_bf16_autocast_on_cpu_trains():
    loader = DataLoader(blobs(), batch_size=32)
    model = mlp()
    dtypes = []
    model[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    hist = fit(model, loader, loader, epochs=4, lr=0.02, amp="bf16", device="cpu", progress=False)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # training and validation ran under autocast
    assert model[0].weight.dtype == torch.float32  # the weights stay in float32
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0] and hist.val_acc[-1] > 0.8


def test_amp_auto_is_off_on_cpu():
    # "auto" on CPU must train in float32: identical to amp=False
    loader = DataLoader(blobs(), batch_size=32)
    a, b = mlp(dropout=0.0), mlp(dropout=0.0)
    fit(a, loader, epochs=2, amp="auto", device="cpu", progress=False)
    fit(b, loader, epochs=2, amp=False, device="cpu", progress=False)
    assert params_equal(a, b)


def test_channels_last_converts_model_and_inputs():
    seen = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return self.head(self.conv(x).mean(dim=(2, 3)))

    x = torch.rand(8, 3, 6, 6)
    loader = DataLoader(TensorDataset(x, torch.arange(8) % 2), batch_size=4)
    model = Net()
    fit(model, loader, loader, epochs=1, channels_last=True, device="cpu", progress=False)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(seen)


def test_progress_bar_shows_epochs(capsys):
    fit(mlp(), DataLoader(blobs(), batch_size=32), epochs=2, device="cpu", progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs", [0, -1, 2.5, True, "3"])
def test_epochs_must_be_a_positive_int(epochs):
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit(mlp(), DataLoader(blobs(), batch_size=32), epochs=epochs, device="cpu", progress=False)


def test_bad_arguments_raise_clear_errors(tmp_path):
    x, y = blobs().tensors
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    kw = {"epochs": 1, "device": "cpu", "progress": False}
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair, got a list of 1"):
        fit(mlp(), DataLoader(TensorDataset(x), batch_size=32), **kw)
    with pytest.raises(TypeError, match="pair, got a dict"):
        fit(mlp(), [{"image": x, "label": y}], **kw)
    with pytest.raises(ValueError, match="no batches"):
        fit(mlp(), [], **kw)
    with pytest.raises(TypeError, match="train_loader must be an iterable"):
        fit(mlp(), x, **kw)
    with pytest.raises(TypeError, match="nn.Module"):
        fit(lambda t: t, loader, **kw)
    with pytest.raises(ValueError, match="none of this model's parameters"):
        fit(mlp(), loader, optimizer=torch.optim.SGD(mlp().parameters(), lr=0.1), **kw)
    with pytest.raises(ValueError, match="lr must be a positive"):
        fit(mlp(), loader, lr=-1, **kw)
    with pytest.raises(ValueError, match="pass a val_loader"):
        fit(mlp(), loader, early_stopping=3, **kw)
    with pytest.raises(ValueError, match="early_stopping must be a positive int"):
        fit(mlp(), loader, loader, early_stopping=0, **kw)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        fit(mlp(), loader, resume=True, **kw)
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        fit(mlp(), loader, amp="fp16", **kw)
    with pytest.raises(ValueError, match="amp must be one of"):
        fit(mlp(), loader, amp="fp8", **kw)
    with pytest.raises(ValueError, match="built on another optimizer"):
        model = mlp()
        other = torch.optim.SGD(mlp().parameters(), lr=0.1)
        fit(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            scheduler=torch.optim.lr_scheduler.StepLR(other, 1),
            **kw,
        )
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(mlp(), DataLoader(TensorDataset(x * float("nan"), y), batch_size=32), **kw)


# ---------------------------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------------------------
def test_evaluate_and_predict_use_eval_and_inference_mode_then_restore_modes():
    inference = []

    class Probe(nn.Module):
        def forward(self, x):
            inference.append((torch.is_inference_mode_enabled(), self.training))
            return x

    model = nn.Sequential(mlp(dropout=0.5), Probe())
    model.train()
    model[0][0].eval()  # a part deliberately kept in eval mode (a frozen layer) must stay so
    loader = DataLoader(blobs(), batch_size=32)
    first = evaluate(model, loader)
    assert evaluate(model, loader) == first  # dropout off: deterministic
    logits, targets = predict(model, loader)
    assert inference and all(flags == (True, False) for flags in inference)
    assert model.training and model[0].training and model[0][2].training and not model[0][0].training

    x, y = blobs().tensors
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(logits, expected)
    assert torch.equal(targets, y)
    assert not model.training  # eval mode stays eval mode


def test_predict_accepts_bare_input_batches():
    x, _ = blobs().tensors
    model = mlp()
    logits, targets = predict(model, DataLoader(x, batch_size=10))
    assert logits.shape == (96, 3) and targets is None


# ---------------------------------------------------------------------------------------------
# Checkpoints and exact resumption
# ---------------------------------------------------------------------------------------------
def test_save_and_load_checkpoint_round_trip(tmp_path):
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    fit(
        model,
        DataLoader(blobs(), batch_size=32),
        epochs=2,
        optimizer=opt,
        scheduler=sched,
        device="cpu",
        progress=False,
    )
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, opt, sched, note="hello", step=7)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))

    model2 = mlp(seed=1)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, gamma=0.5)
    state = load_checkpoint(path, model2, opt2, sched2)
    assert params_equal(model, model2)
    assert state["note"] == "hello" and state["step"] == 7
    assert (
        sched2.state_dict() == sched.state_dict() and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    )
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])

    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", model2)
    with pytest.raises(RuntimeError, match="does not fit this model"):
        load_checkpoint(path, nn.Linear(6, 3))
    with pytest.raises(ValueError, match="may not be named"):
        save_checkpoint(tmp_path / "x.pt", model, format="oops")


def _run(tmp_path, *, epochs, generator, resume=False, ckpt="ckpt.pt", model_seed=0, after=None):
    """One training run: dropout model, shuffled loader, AdamW + StepLR, seed 0."""
    ds = blobs()
    g = torch.Generator() if generator else None
    loader = DataLoader(ds, batch_size=16, shuffle=True, generator=g)
    train = loader if after is None else InterruptingLoader(loader, after)
    model = mlp(seed=model_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    hist = fit(
        model,
        train,
        DataLoader(ds, batch_size=32),
        epochs=epochs,
        optimizer=opt,
        scheduler=sched,
        checkpoint=tmp_path / ckpt if ckpt else None,
        resume=resume,
        device="cpu",
        progress=False,
        seed=0,
    )
    return model, opt, sched, hist


@pytest.mark.parametrize("generator", [False, True], ids=["global-rng", "loader-generator"])
def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path, generator):
    model_a, opt_a, sched_a, hist_a = _run(tmp_path, epochs=4, generator=generator, ckpt=None)

    _run(tmp_path, epochs=2, generator=generator)  # run B, first half: writes ckpt.pt
    # a new model (other initial weights), a new optimizer and scheduler continue from the checkpoint
    model_b, opt_b, sched_b, hist_b = _run(
        tmp_path, epochs=4, generator=generator, resume=True, model_seed=123
    )

    assert params_equal(model_a, model_b)
    assert sched_b.last_epoch == sched_a.last_epoch == 4
    assert sched_b.state_dict() == sched_a.state_dict()
    assert (
        opt_b.param_groups[0]["lr"]
        == pytest.approx(opt_a.param_groups[0]["lr"])
        == pytest.approx(0.01 * 0.7**4)
    )
    assert (
        hist_b.lr == hist_a.lr
        and hist_b.train_loss == hist_a.train_loss
        and hist_b.val_loss == hist_a.val_loss
    )
    assert len(hist_b.epoch_time) == 4


def test_resume_depends_on_restoring_the_random_state(tmp_path, monkeypatch):
    # the comparison above can fail: without the saved RNG states, epochs 3-4 shuffle and drop out
    # like epochs 1-2 did, and the weights differ
    import utils.train.checkpoint

    model_a, *_ = _run(tmp_path, epochs=4, generator=False, ckpt=None)
    _run(tmp_path, epochs=2, generator=False)
    monkeypatch.setattr(utils.train.checkpoint, "set_rng_state", lambda state, loader: None)
    model_b, *_ = _run(tmp_path, epochs=4, generator=False, resume=True)
    assert not params_equal(model_a, model_b)


def test_run_interrupted_mid_epoch_resumes_exactly(tmp_path):
    model_a, *_ = _run(tmp_path, epochs=4, generator=False, ckpt=None)
    with pytest.raises(Interrupt):
        _run(tmp_path, epochs=4, generator=False, after=6 * 2 + 3)  # dies in epoch 3, after 3 batches
    assert load_checkpoint(tmp_path / "ckpt.pt", mlp())["epoch"] == 2
    model_b, *_ = _run(tmp_path, epochs=4, generator=False, resume=True, model_seed=5)
    assert params_equal(model_a, model_b)


def test_resume_without_a_file_starts_from_scratch(tmp_path):
    model, _, _, hist = _run(tmp_path, epochs=2, generator=False, resume=True)
    assert len(hist) == 2 and (tmp_path / "ckpt.pt").is_file()
    reference, *_ = _run(tmp_path, epochs=2, generator=False, ckpt="fresh.pt")
    assert params_equal(model, reference)


def test_resume_refuses_a_checkpoint_that_fit_did_not_write(tmp_path):
    model = mlp()
    save_checkpoint(tmp_path / "plain.pt", model)
    with pytest.raises(ValueError, match="not written by fit"):
        fit(
            model,
            DataLoader(blobs(), batch_size=32),
            epochs=1,
            checkpoint=tmp_path / "plain.pt",
            resume=True,
            optimizer=None,
            device="cpu",
            progress=False,
        )


# ---------------------------------------------------------------------------------------------
# GPU (skipped without CUDA)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16"])
def test_mixed_precision_on_cuda(amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    loader = DataLoader(blobs(), batch_size=32)
    model = mlp()
    hist = fit(model, loader, loader, epochs=4, lr=0.02, amp=amp, device="cuda", progress=False)
    assert next(model.parameters()).device.type == "cuda"
    assert all(math.isfinite(v) for v in hist.train_loss) and hist.val_acc[-1] > 0.8
    logits, _ = predict(model, loader)
    assert logits.device == CPU and logits.dtype == torch.float32


@pytest.mark.gpu
@cuda
def test_resume_is_exact_on_cuda_with_fp16_scaler(tmp_path):
    def run(epochs, resume, ckpt, seed_model=0):
        loader = DataLoader(blobs(), batch_size=16, shuffle=True)
        model = mlp(seed=seed_model)
        fit(
            model,
            loader,
            epochs=epochs,
            amp="fp16",
            device="cuda",
            checkpoint=ckpt,
            resume=resume,
            progress=False,
            seed=0,
        )
        return model

    a = run(4, False, None)
    run(2, False, tmp_path / "c.pt")
    b = run(4, True, tmp_path / "c.pt", seed_model=3)
    assert params_equal(a, b)


def test_progress_bar_follows_course_progress(monkeypatch, capsys):
    """The website build sets COURSE_PROGRESS=0: no bar; otherwise fit shows one on stderr."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from utils.train import fit

    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4)
    model = torch.nn.Linear(3, 2)
    monkeypatch.setenv("COURSE_PROGRESS", "0")
    fit(model, data, epochs=1, device="cpu")
    assert "batch" not in capsys.readouterr().err
    monkeypatch.setenv("COURSE_PROGRESS", "1")
    fit(model, data, epochs=1, device="cpu")
    assert "batch" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Frozen parts, accumulation, clipping, early stopping on any metric, History
# ---------------------------------------------------------------------------------------------
class Backbone(nn.Module):
    """A conv + batch norm feature extractor that records its mode at every forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.bn(self.conv(x)).relu().mean(dim=(2, 3))


def test_a_frozen_backbone_stays_in_eval_mode_and_out_of_the_default_optimizer(tmp_path):
    backbone = Backbone()
    model = nn.Sequential(backbone, nn.Linear(4, 3))
    backbone.eval()  # frozen: batch norm keeps its running statistics
    backbone.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 6, 6, generator=g) * 3 + 1, torch.arange(32) % 3)
    fit(
        model,
        DataLoader(data, batch_size=8),
        DataLoader(data, batch_size=16),
        epochs=3,
        lr=0.05,
        checkpoint=tmp_path / "c.pt",
        device="cpu",
        progress=False,
    )
    assert backbone.modes and not any(backbone.modes)  # never switched to training mode, not even once
    assert model.training and model[1].training and not backbone.training
    after = model.state_dict()
    for k in ("0.conv.weight", "0.bn.running_mean", "0.bn.running_var", "0.bn.num_batches_tracked"):
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["1.weight"], before["1.weight"])  # the head trained
    groups = torch.load(tmp_path / "c.pt", weights_only=True)["optimizer"]["param_groups"]
    assert sum(len(grp["params"]) for grp in groups) == 2  # the head's weight and bias only
    # without the learner's eval(), the old behaviour: batch norm trains and its statistics move
    free = nn.Sequential(Backbone(), nn.Linear(4, 3))
    fit(free, DataLoader(data, batch_size=8), epochs=1, lr=0.05, device="cpu", progress=False)
    assert all(free[0].modes) and not torch.equal(
        free.state_dict()["0.bn.running_mean"], before["0.bn.running_mean"]
    )
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(nn.Sequential(backbone), DataLoader(data, batch_size=8), epochs=1, device="cpu", progress=False)


@pytest.mark.parametrize("n", [48, 40], ids=["full-windows", "short-last-window"])
def test_accumulating_gradients_equals_a_bigger_batch(n):
    ds = blobs(n=n)
    small, big = mlp(dropout=0.0), mlp(dropout=0.0)
    fit(
        small,
        DataLoader(ds, batch_size=8),
        epochs=3,
        optimizer=torch.optim.SGD(small.parameters(), lr=0.1),
        accumulate=2,
        device="cpu",
        progress=False,
    )
    fit(
        big,
        DataLoader(ds, batch_size=16),
        epochs=3,
        optimizer=torch.optim.SGD(big.parameters(), lr=0.1),
        device="cpu",
        progress=False,
    )
    for k, v in big.state_dict().items():
        torch.testing.assert_close(small.state_dict()[k], v, atol=1e-6, rtol=1e-5)
    assert not params_equal(small, mlp(dropout=0.0))  # it did train


def test_accumulation_steps_once_per_window_even_without_len():
    class Unsized:  # an iterable without __len__: the last window is flushed at the end of the epoch
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            return iter(self.loader)

    steps = []
    model = mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda *args: steps.append(1))
    fit(
        model,
        Unsized(DataLoader(blobs(n=40), batch_size=8)),
        epochs=2,
        optimizer=opt,
        accumulate=2,
        device="cpu",
        progress=False,
    )
    assert len(steps) == 2 * 3  # 5 batches a epoch: windows of 2, 2 and 1


def test_gradient_clipping_equals_clip_grad_norm():
    ds = blobs()
    loader = DataLoader(ds, batch_size=16)
    model, reference, unclipped = mlp(dropout=0.0), mlp(dropout=0.0), mlp(dropout=0.0)
    fit(
        model,
        loader,
        epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        grad_clip=0.1,
        device="cpu",
        progress=False,
    )
    fit(
        unclipped,
        loader,
        epochs=2,
        optimizer=torch.optim.SGD(unclipped.parameters(), lr=0.5),
        device="cpu",
        progress=False,
    )
    opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    norms = []
    for _ in range(2):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            norms.append(torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1).item())
            opt.step()
    assert params_equal(model, reference) and not params_equal(model, unclipped)
    assert max(norms) > 0.1  # clipping was active
    with pytest.raises(ValueError, match="grad_clip must be a positive number"):
        fit(mlp(), loader, epochs=1, grad_clip=0, device="cpu", progress=False)


class ScriptedMetric(Classification):
    """Classification whose epoch-end validation metric ``map`` follows a script."""

    def __init__(self, values):
        super().__init__()
        self.values, self.epoch = values, 0

    def validation_epoch_end(self):
        self.epoch += 1
        return {"map": self.values[self.epoch - 1]}


def test_early_stopping_on_a_metric_that_should_go_up():
    loader = DataLoader(blobs(), batch_size=16)
    model = mlp(dropout=0.0)
    weights = []

    class Recording(ScriptedMetric):
        def validation_epoch_start(self):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})

    hist = fit(
        model,
        loader,
        loader,
        epochs=10,
        lr=0.05,
        task=Recording([0.1, 0.5, 0.4, 0.3, 0.6, 0.7]),
        early_stopping=2,
        monitor="val_map",
        device="cpu",
        progress=False,
    )
    assert hist["val_map"] == [0.1, 0.5, 0.4, 0.3] and hist.best_epoch == 1 and hist.stopped_early
    assert hist.monitor == "val_map" and hist.mode == "max"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights[1].items())  # epoch 2's weights
    # min mode on the same script keeps the first epoch
    hist = fit(
        mlp(),
        loader,
        loader,
        epochs=10,
        task=ScriptedMetric([0.1, 0.5, 0.4, 0.3]),
        early_stopping=2,
        monitor="val_map",
        mode="min",
        device="cpu",
        progress=False,
    )
    assert hist.best_epoch == 0 and len(hist) == 3
    with pytest.raises(ValueError, match="does not record"):
        fit(
            mlp(),
            loader,
            loader,
            epochs=2,
            early_stopping=1,
            monitor="val_miou",
            device="cpu",
            progress=False,
        )
    with pytest.raises(ValueError, match="pass mode='min' or mode='max'"):
        fit(
            mlp(),
            loader,
            loader,
            epochs=2,
            early_stopping=1,
            monitor="val_thing",
            device="cpu",
            progress=False,
        )


def test_history_holds_named_metrics_and_reads_the_old_format():
    h = History(monitor="val_map")
    h.append({"train_loss": 1.0, "val_map": 0.2, "lr": 0.1})
    h.append({"train_loss": 0.5, "train_kl": 0.3, "val_map": 0.4, "lr": 0.1})  # kl appears in epoch 2
    assert h["train_kl"][0] != h["train_kl"][0] and h["train_kl"][1] == 0.3  # NaN before it was recorded
    assert h.best_epoch == 1 and h.epochs == len(h) == 2 and "val_map" in h
    assert math.isnan(h.val_acc[1]) and h.train_loss == [1.0, 0.5]  # the old attributes still read
    with pytest.raises(KeyError, match="it holds"):
        h["val_miou"]
    assert History.from_dict(h.as_dict()) == h
    old = {
        "train_loss": [1.0, 0.8],
        "train_acc": [0.5, 0.6],
        "val_loss": [1.1, 0.9],
        "val_acc": [0.4, 0.7],
        "lr": [0.1, 0.1],
        "epoch_time": [1.0, 1.1],
        "best_epoch": 1,
        "stopped_early": False,
    }
    restored = History.from_dict(old)  # what a checkpoint of the first fit holds
    assert restored.val_acc == [0.4, 0.7] and restored.best_epoch == 1 and restored.monitor == "val_loss"
    with pytest.raises(TypeError, match="list of numbers"):
        History.from_dict({"train_loss": 3.0})


def test_resume_from_a_checkpoint_of_the_first_format(tmp_path):
    """A checkpoint written by the first fit (format 1, History of six lists) continues exactly."""
    model_a, *_ = _run(tmp_path, epochs=4, generator=False, ckpt=None)
    _run(tmp_path, epochs=2, generator=False)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    hist = state["history"]
    state["format"] = "utils.train/1"
    state["history"] = {
        k: hist[k]
        for k in (
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "lr",
            "epoch_time",
            "best_epoch",
            "stopped_early",
        )
    }
    torch.save(state, tmp_path / "ckpt.pt")
    model_b, *_ = _run(tmp_path, epochs=4, generator=False, resume=True, model_seed=9)
    assert params_equal(model_a, model_b)


def test_checkpoints_are_written_atomically_under_a_unique_name(tmp_path, monkeypatch):
    model = mlp()
    save_checkpoint(tmp_path / "m.pt", model)
    first = (tmp_path / "m.pt").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "m.pt", mlp(seed=3))
    assert (tmp_path / "m.pt").read_bytes() == first  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # and no temporary file is left
