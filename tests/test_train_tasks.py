"""utils.train tasks beyond classification: detection, segmentation, autoencoders and VAEs, GANs and
distillation, each against a hand-computed reference and trained until it makes progress."""

from __future__ import annotations

import math
import sys
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from utils.train import (
    GAN,
    Classification,
    Detection,
    Distillation,
    Reconstruction,
    Segmentation,
    evaluate,
    fit,
    load_checkpoint,
    predict,
)
from utils.train.generative import gradient_penalty, kl_divergence
from utils.train.tasks import distillation_loss
from utils.train.vision_tasks import dice_loss

KW = {"device": "cpu", "progress": False}


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------
# Detection: a stand-in detector that honours torchvision's convention, and a tiny Faster R-CNN
# ---------------------------------------------------------------------------------------------
BOX = torch.tensor([[8.0, 8.0, 24.0, 24.0]])


class BoxRegressor(nn.Module):
    """Predicts one learned box per image. Train mode: a dict of two losses; eval mode: detections."""

    def __init__(self):
        super().__init__()
        self.box = nn.Parameter(torch.tensor([0.0, 0.0, 4.0, 4.0]))
        self.logit = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, images, targets=None):
        self.seen.append([tuple(im.shape) for im in images])
        if self.training:
            assert targets is not None and len(targets) == len(images)
            goal = torch.stack([t["boxes"][0] for t in targets])  # (B, 4)
            return {
                "loss_box": F.smooth_l1_loss(self.box.expand_as(goal), goal, beta=1.0),
                "loss_score": (self.logit - 2.0) ** 2,
            }
        score = torch.sigmoid(self.logit).reshape(1)
        return [
            {
                "boxes": self.box[None].detach().clone(),
                "scores": score,
                "labels": torch.ones(1, dtype=torch.int64),
            }
            for _ in images
        ]


class RecallAt50:
    """A stand-in for MeanAveragePrecision: the fraction of ground-truth boxes hit at IoU >= 0.5."""

    instances: ClassVar[list] = []

    def __init__(self):
        self.hits, self.total, self.updates = 0, 0, []
        RecallAt50.instances.append(self)

    def update(self, preds, targets):
        import torchvision

        self.updates.append((preds, targets))
        for p, t in zip(preds, targets):
            iou = torchvision.ops.box_iou(t["boxes"], p["boxes"])
            self.hits += int((iou.max(dim=1).values >= 0.5).sum()) if iou.numel() else 0
            self.total += len(t["boxes"])

    def compute(self):
        return {
            "map": torch.tensor(self.hits / self.total),
            "map_50": self.hits / self.total,
            "map_per_class": torch.tensor([0.1, 0.2]),
            "classes": [1, 2],
        }


def scene_dicts(n=8, size=32, batch=4):
    """Batches shaped like utils.data.collate_scenes: a dict of an image tensor and per-image lists."""
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        out.append(
            {
                "image": torch.rand(b, 3, size, size),
                "boxes": [BOX.clone() for _ in range(b)],
                "labels": [torch.ones(1, dtype=torch.int64) for _ in range(b)],
                "instance_masks": [torch.zeros(1, size, size, dtype=torch.bool) for _ in range(b)],
                "semantic_mask": torch.zeros(b, size, size, dtype=torch.int64),
            }
        )
    return out


def test_detection_sums_the_loss_dict_logs_each_loss_and_measures_the_metric_each_epoch():
    model = BoxRegressor()
    batches = scene_dicts()
    RecallAt50.instances.clear()
    hist = fit(
        model,
        batches,
        batches,
        epochs=12,
        task=Detection(metric=RecallAt50),
        optimizer=torch.optim.SGD([{"params": [model.box], "lr": 4.0}, {"params": [model.logit], "lr": 0.2}]),
        early_stopping=30,
        monitor="val_map",
        **KW,
    )
    # the step's loss is the sum of the detector's losses, and each is logged
    for epoch in range(len(hist)):
        assert hist.train_loss[epoch] == pytest.approx(
            hist["train_loss_box"][epoch] + hist["train_loss_score"][epoch], rel=1e-6
        )
    assert hist.train_loss[-1] < 0.01 * hist.train_loss[0]
    # the metric saw every validation image once per epoch, on the CPU, as torchvision-style dicts
    assert len(RecallAt50.instances) == len(hist)
    preds, targets = RecallAt50.instances[-1].updates[0]
    assert (
        len(preds) == 4
        and set(preds[0]) == {"boxes", "scores", "labels"}
        and preds[0]["boxes"].device.type == "cpu"
    )
    assert (
        set(targets[0]) == {"boxes", "labels"}
        and sum(len(u[0]) for u in RecallAt50.instances[-1].updates) == 8
    )
    # scalar results are logged as val_<key>; per-class tensors and lists are left out
    assert hist["val_map"][0] == 0.0 and hist["val_map"][-1] == 1.0 and hist["val_map_50"][-1] == 1.0
    assert "val_map_per_class" not in hist and "val_classes" not in hist
    assert hist.best_epoch == hist["val_map"].index(1.0)  # mode inferred: larger mAP is better
    assert all(math.isnan(v) for v in hist.val_loss)  # eval-mode detectors return no loss


def test_detection_takes_lists_of_images_of_different_sizes_and_target_dicts():
    model = BoxRegressor()
    images = [torch.rand(3, 20, 30), torch.rand(3, 32, 24), torch.rand(3, 16, 16)]
    targets = [{"boxes": BOX.clone(), "labels": torch.ones(1, dtype=torch.int64)} for _ in images]
    hist = fit(model, [(images, targets)], epochs=2, task=Detection(metric=False), lr=0.1, **KW)
    assert len(hist) == 2 and model.seen[0] == [(3, 20, 30), (3, 32, 24), (3, 16, 16)]
    out, tgt = predict(model, [(images, targets)])
    assert isinstance(out, list) and len(out) == 3 and out[0]["boxes"].shape == (1, 4)
    assert len(tgt) == 3 and torch.equal(tgt[2]["boxes"], BOX)
    with pytest.raises(TypeError, match="image, boxes and labels"):
        fit(BoxRegressor(), [{"image": torch.rand(2, 3, 8, 8)}], epochs=1, task=Detection(metric=False), **KW)

    class NotADetector(nn.Linear):
        def forward(self, images, targets=None):
            return self.weight.sum()

    with pytest.raises(TypeError, match="dict of losses"):
        fit(NotADetector(2, 2), [(images, targets)], epochs=1, task=Detection(metric=False), **KW)


def test_detection_without_the_metrics_package_says_what_to_pass(monkeypatch):
    monkeypatch.setitem(sys.modules, "utils.metrics.detection", None)  # import fails
    with pytest.raises(ImportError, match=r"pass Detection\(metric=...\)"):
        evaluate(BoxRegressor(), scene_dicts(4), task=Detection())


def test_a_tiny_torchvision_faster_rcnn_trains_through_the_detection_task():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 16
    model = FasterRCNN(
        backbone,
        num_classes=2,
        min_size=32,
        max_size=32,
        rpn_anchor_generator=AnchorGenerator(sizes=((8, 16),), aspect_ratios=((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=2),
        representation_size=32,
        rpn_batch_size_per_image=32,
        box_batch_size_per_image=32,
    )
    batches = scene_dicts(n=8, size=32)
    for b in batches:  # a bright square where the box is: something to find
        b["image"][:, :, 8:24, 8:24] += 1.0
    RecallAt50.instances.clear()
    hist = fit(
        model,
        batches,
        batches[:1],
        epochs=4,
        task=Detection(metric=RecallAt50),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9),
        seed=0,
        **KW,
    )
    assert {
        "train_loss_classifier",
        "train_loss_box_reg",
        "train_loss_objectness",
        "train_loss_rpn_box_reg",
    } <= set(hist.metrics)
    assert all(math.isfinite(v) for v in hist.train_loss) and hist.train_loss[-1] < hist.train_loss[0]
    assert len(hist["val_map"]) == 4 and model.training  # back in train mode after validation


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------
def reference_dice(logits, target, ignore_index=None, weight=None, smooth=1.0):
    """Soft Dice written class by class with boolean masks."""
    probs = logits.softmax(dim=1)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    dices = []
    for c in range(logits.shape[1]):
        p = probs[:, c][valid]
        t = (target[valid] == c).float()
        dices.append((2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth))
    dices = torch.stack(dices)
    return 1 - (dices.mean() if weight is None else (dices * weight).sum() / weight.sum())


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_dice_loss_matches_a_class_by_class_reference(ignore_index):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    if ignore_index is not None:
        target[:, 0] = ignore_index
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        dice_loss(logits, target, ignore_index=ignore_index),
        reference_dice(logits, target, ignore_index),
        atol=1e-6,
        rtol=1e-6,
    )
    torch.testing.assert_close(
        dice_loss(logits, target, ignore_index=ignore_index, weight=weight),
        reference_dice(logits, target, ignore_index, weight),
        atol=1e-6,
        rtol=1e-6,
    )
    perfect = F.one_hot(torch.where(target == 255, 0, target), 4).permute(0, 3, 1, 2) * 50.0
    assert dice_loss(perfect, target, ignore_index=ignore_index) < 1e-6


class ConfusionMIoU:
    """A stand-in for SegmentationMetrics: mIoU from a confusion matrix (classes present only)."""

    def __init__(self, num_classes=2):
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred, target):
        keep = target != 255
        self.cm += torch.bincount(target[keep] * 2 + pred[keep], minlength=4).reshape(2, 2)

    def compute(self):
        inter = self.cm.diag().float()
        union = self.cm.sum(0) + self.cm.sum(1) - self.cm.diag()
        return {
            "miou": (inter / union).mean(),
            "pixel_accuracy": inter.sum() / self.cm.sum(),
            "iou_per_class": inter / union,
        }


def bright_squares(n=16, size=12, seed=0):
    """Images with a bright square; the mask marks it (class 1). The border pixels are ignored (255)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    y = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        r, c = torch.randint(0, size - 5, (2,), generator=g).tolist()
        x[i, 0, r : r + 5, c : c + 5] += 0.7
        y[i, r : r + 5, c : c + 5] = 1
    y[:, 0, :] = 255
    return TensorDataset(x, y)


def test_segmentation_learns_a_mask_and_logs_miou_and_the_loss_parts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    ds = bright_squares()
    task = Segmentation(2, ignore_index=255, loss="ce+dice", metric=ConfusionMIoU)
    hist = fit(
        model,
        DataLoader(ds, batch_size=4, shuffle=True),
        DataLoader(ds, batch_size=8),
        epochs=15,
        lr=0.02,
        task=task,
        seed=0,
        **KW,
    )
    assert hist["val_miou"][-1] > 0.9 > hist["val_miou"][0]
    assert hist["val_pixel_accuracy"][-1] > 0.95 and "val_iou_per_class" not in hist
    for epoch in range(len(hist)):
        assert hist.train_loss[epoch] == pytest.approx(
            hist["train_ce"][epoch] + hist["train_dice"][epoch], rel=1e-6
        )
    result = evaluate(model, DataLoader(ds, batch_size=5), task=task)
    assert result["miou"] == pytest.approx(hist["val_miou"][-1]) and set(result) >= {"loss", "ce", "dice"}


def test_segmentation_loss_and_torchvision_aux_output():
    class TwoHeads(nn.Module):  # torchvision's segmentation models return {"out": ..., "aux": ...}
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return {"out": self.a(x), "aux": self.b(x)}

    torch.manual_seed(0)
    model = TwoHeads()
    ds = bright_squares(n=8)
    x, y = ds.tensors
    weights = [1.0, 3.0]
    task = Segmentation(2, ignore_index=255, class_weights=weights, metric=False)
    hist = fit(
        model,
        DataLoader(ds, batch_size=8),
        epochs=1,
        task=task,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        **KW,
    )
    with torch.no_grad():
        out = model(x)
        w = torch.tensor(weights)
        expected = F.cross_entropy(out["out"], y, weight=w, ignore_index=255) + 0.5 * F.cross_entropy(
            out["aux"], y, weight=w, ignore_index=255
        )
    assert hist.train_loss[0] == pytest.approx(expected.item(), rel=1e-6)
    bad = y.clone()
    bad[0, 5, 5] = 7
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\] or equal ignore_index=255"):
        fit(model, [(x, bad)], epochs=1, task=task, **KW)
    with pytest.raises(ValueError, match="int64 class indices"):
        fit(model, [(x, y.float())], epochs=1, task=task, **KW)
    with pytest.raises(ValueError, match="loss must be one of"):
        Segmentation(2, loss="focal")


# ---------------------------------------------------------------------------------------------
# Autoencoders and VAEs
# ---------------------------------------------------------------------------------------------
def digits(n=400, seed=0):
    """8x8 images in [0, 1]: one of four bar patterns, at a random brightness, with a little noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.zeros(4, 8, 8)
    patterns[0, :, 2:4] = patterns[1, 2:4, :] = patterns[2, 5:7, :] = 1.0
    patterns[3] = torch.eye(8)
    which = torch.randint(0, 4, (n,), generator=g)
    bright = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=g)
    x = patterns[which] * bright + 0.05 * torch.rand(n, 8, 8, generator=g)
    return x.clamp(0, 1)[:, None]  # (n, 1, 8, 8)


class TinyVAE(nn.Module):
    def __init__(self, latent=4):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 32), nn.ReLU(), nn.Linear(32, 64), nn.Sigmoid())

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.dec(z).view_as(x), mu, logvar


def test_kl_divergence_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


def test_vae_logs_the_kl_term_separately_and_learns():
    x = digits()
    torch.manual_seed(0)
    model = TinyVAE()
    beta = 0.5
    hist = fit(
        model,
        DataLoader(x, batch_size=50, shuffle=True),
        DataLoader(x[:100], batch_size=50),
        epochs=8,
        lr=3e-3,
        task=Reconstruction("bce", beta=beta),
        seed=0,
        **KW,
    )
    for split in ("train", "val"):
        for epoch in range(len(hist)):  # the loss is recon + beta * kl, each logged on its own
            total = hist[f"{split}_recon"][epoch] + beta * hist[f"{split}_kl"][epoch]
            assert hist[f"{split}_loss"][epoch] == pytest.approx(total, rel=1e-6)
    assert hist["train_recon"][-1] < 0.8 * hist["train_recon"][0] and hist["train_kl"][-1] > 0
    # the per-image sum of binary cross-entropies, averaged over images, is what "recon" means
    model.eval()
    with torch.no_grad():
        x_hat, _, _ = model(x[:100])
        expected = F.binary_cross_entropy(x_hat, x[:100], reduction="sum") / 100
    assert hist["val_recon"][-1] == pytest.approx(expected.item(), rel=1e-5)


def test_plain_autoencoder_and_the_mean_reduction():
    x = digits()[:64]
    torch.manual_seed(0)
    ae = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 64), nn.Unflatten(1, (1, 8, 8))
    )
    frozen = torch.optim.SGD(ae.parameters(), lr=0.0)
    summed = fit(
        ae, DataLoader(x, batch_size=32), epochs=1, optimizer=frozen, task=Reconstruction("mse"), **KW
    )
    mean = fit(
        ae,
        DataLoader(x, batch_size=32),
        epochs=1,
        optimizer=frozen,
        task=Reconstruction("mse", reduction="mean"),
        **KW,
    )
    assert set(summed.metrics) == {"train_loss", "lr", "epoch_time"}
    assert summed.train_loss[0] == pytest.approx(64 * mean.train_loss[0], rel=1e-6)
    with torch.no_grad():
        assert mean.train_loss[0] == pytest.approx(F.mse_loss(ae(x), x).item(), rel=1e-6)
    with pytest.raises(ValueError, match="input's shape"):
        fit(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 64)),
            DataLoader(x, batch_size=32),
            epochs=1,
            task=Reconstruction(),
            **KW,
        )


# ---------------------------------------------------------------------------------------------
# GANs
# ---------------------------------------------------------------------------------------------
TARGET = torch.tensor([2.0, -1.0])


def gaussian_2d(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TARGET + 0.3 * torch.randn(n, 2, generator=g)


def gan_2d(seed=0):
    torch.manual_seed(seed)
    generator = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    discriminator = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    return nn.ModuleDict({"generator": generator, "discriminator": discriminator})


def test_a_2d_gan_moves_its_samples_onto_the_data():
    model = gan_2d()
    with torch.no_grad():
        start = (model.generator(torch.randn(1000, 2)).mean(0) - TARGET).norm().item()
    hist = fit(
        model,
        DataLoader(gaussian_2d(), batch_size=64, shuffle=True),
        epochs=25,
        lr=2e-3,
        task=GAN(2, betas=(0.5, 0.9)),
        seed=0,
        **KW,
    )
    with torch.no_grad():
        samples = model.generator(torch.randn(2000, 2))
    end = (samples.mean(0) - TARGET).norm().item()
    assert start > 2.0 and end < 0.3, (start, end)
    assert (
        0.1 < samples.std(0).mean().item() < 0.8
    )  # spread out like the data (0.3), not collapsed or blown up
    assert {"train_d_loss", "train_g_loss", "train_d_acc"} <= set(hist.metrics) and "train_loss" not in hist
    assert 0.3 < hist["train_d_acc"][-1] < 0.9  # D can no longer tell them apart for sure


@pytest.mark.parametrize("loss", ["nonsaturating", "saturating", "wgan-gp"])
def test_gan_task_equals_a_hand_written_loop(loss):
    import utils

    data = gaussian_2d(128)
    model = gan_2d()
    hist = fit(
        model, DataLoader(data, batch_size=32), epochs=2, lr=1e-3, task=GAN(2, loss, n_critic=2), seed=0, **KW
    )
    ref = gan_2d()
    g_net, d_net = ref.generator, ref.discriminator
    g_opt = torch.optim.Adam(g_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    utils.seed_everything(0)
    ones, zeros = torch.ones(32), torch.zeros(32)
    for _ in range(2):
        for i, real in enumerate(DataLoader(data, batch_size=32)):
            fake = g_net(torch.randn(32, 2))
            d_opt.zero_grad()
            s_real, s_fake = d_net(real).view(-1), d_net(fake.detach()).view(-1)
            if loss == "wgan-gp":
                eps = torch.rand(32, 1)
                mix = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
                (grad,) = torch.autograd.grad(d_net(mix).sum(), mix, create_graph=True)
                loss_d = s_fake.mean() - s_real.mean() + 10 * ((grad.norm(2, dim=1) - 1) ** 2).mean()
            else:
                loss_d = F.binary_cross_entropy_with_logits(
                    s_real, ones
                ) + F.binary_cross_entropy_with_logits(s_fake, zeros)
            loss_d.backward()
            d_opt.step()
            if i % 2 == 0:  # n_critic = 2
                g_opt.zero_grad()
                s = d_net(fake).view(-1)
                loss_g = {
                    "wgan-gp": -s.mean(),
                    "nonsaturating": F.binary_cross_entropy_with_logits(s, ones),
                    "saturating": torch.log(1 - torch.sigmoid(s)).mean(),
                }[loss]
                loss_g.backward()
                g_opt.step()
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0)
    assert len(hist["train_g_loss"]) == 2


def test_gan_losses_follow_their_definitions():
    s = torch.tensor([-2.0, 0.5, 3.0])
    sig = torch.sigmoid(s)
    torch.testing.assert_close(GAN(2)._g_loss(s), -torch.log(sig).mean())
    torch.testing.assert_close(GAN(2, loss="saturating")._g_loss(s), torch.log(1 - sig).mean())
    torch.testing.assert_close(GAN(2, loss="wgan-gp")._g_loss(s), -s.mean())
    assert GAN(2, loss="wgan-gp").n_critic == 5 and GAN(2).n_critic == 1
    # the gradient penalty of a linear critic w.x is (|w| - 1)^2 wherever it is evaluated
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(
        gradient_penalty(critic, torch.randn(6, 2), torch.randn(6, 2)), torch.tensor(16.0)
    )
    with pytest.raises(TypeError, match=".generator and .discriminator"):
        fit(nn.Linear(2, 2), [torch.randn(4, 2)], epochs=1, task=GAN(2), **KW)


def test_gan_generator_step_leaves_no_gradient_in_the_discriminator_and_keeps_frozen_flags(monkeypatch):
    model = gan_2d()
    model.discriminator[0].bias.requires_grad_(False)  # a part the learner froze stays frozen
    d_weight = model.discriminator[2].weight
    seen = []  # (which optimizer stepped, D's gradient at that moment)
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        is_d = any(p is d_weight for g in self.param_groups for p in g["params"])
        seen.append(("D" if is_d else "G", None if d_weight.grad is None else d_weight.grad.clone()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    fit(model, [gaussian_2d(64), gaussian_2d(64, seed=1)], epochs=1, task=GAN(2), lr=1e-3, seed=0, **KW)
    assert [who for who, _ in seen] == ["D", "G", "D", "G"]
    for (_, at_d_step), (_, at_g_step) in zip(seen[::2], seen[1::2]):
        # the generator's backward pass went through D but left D's gradients as D's own step had them
        assert at_d_step.abs().sum() > 0 and torch.equal(at_d_step, at_g_step)
    assert not model.discriminator[0].bias.requires_grad and d_weight.requires_grad


def test_two_optimizer_checkpoint_resumes_exactly(tmp_path):
    def run(epochs, ckpt=None, resume=False, seed_model=0):
        model = gan_2d(seed_model)
        loader = DataLoader(gaussian_2d(128), batch_size=32, shuffle=True)
        hist = fit(
            model,
            loader,
            epochs=epochs,
            task=GAN(2, loss="wgan-gp", n_critic=2),
            lr=1e-3,
            checkpoint=ckpt,
            resume=resume,
            seed=0,
            **KW,
        )
        return model, hist

    model_a, hist_a = run(4)
    run(2, tmp_path / "gan.pt")
    state = load_checkpoint(tmp_path / "gan.pt", gan_2d())
    assert set(state["optimizer"]) == {"generator", "discriminator"} and state["epoch"] == 2
    model_b, hist_b = run(4, tmp_path / "gan.pt", resume=True, seed_model=7)
    assert params_equal(model_a, model_b)
    assert (
        hist_a["train_d_loss"] == hist_b["train_d_loss"] and hist_a["train_g_loss"] == hist_b["train_g_loss"]
    )
    with pytest.raises(ValueError, match="several optimizers"):
        load_checkpoint(tmp_path / "gan.pt", gan_2d(), torch.optim.Adam(gan_2d().parameters()))


# ---------------------------------------------------------------------------------------------
# Distillation
# ---------------------------------------------------------------------------------------------
def blobs(n=240, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = 2.0 * torch.randn(classes, d, generator=g)[y] + 1.0 * torch.randn(n, d, generator=g)
    return TensorDataset(x, y)


def test_distillation_loss_has_the_t_squared_factor():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    temp = 3.0
    p_t = (t / temp).softmax(1)
    manual = temp**2 * (p_t * (p_t.log() - (s / temp).log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t, temp), manual)


def test_distilled_student_approaches_its_teacher():
    ds = blobs()
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3))
    fit(teacher, DataLoader(ds, batch_size=32, shuffle=True), epochs=15, lr=1e-2, seed=0, **KW)
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = ds.tensors[0]
    task = Distillation(teacher, temperature=4.0, alpha=0.7)
    hist = fit(
        student,
        DataLoader(ds, batch_size=32, shuffle=True),
        DataLoader(ds, batch_size=60),
        epochs=30,
        lr=1e-2,
        task=task,
        seed=0,
        **KW,
    )
    for epoch in range(len(hist)):
        mixed = 0.7 * hist["train_kd"][epoch] + 0.3 * hist["train_ce"][epoch]
        assert hist.train_loss[epoch] == pytest.approx(mixed, rel=1e-6)
    assert hist["val_kd"][-1] < 0.2 * hist["val_kd"][0]
    with torch.no_grad():
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agree > 0.95 and not teacher.training and hist.val_acc[-1] > 0.85
    with pytest.raises(ValueError, match="alpha=1"):
        fit(student, [x], epochs=1, task=task, **KW)
    fit(
        student, [x], epochs=1, task=Distillation(teacher, alpha=1.0), **KW
    )  # unlabelled batches with alpha=1


def test_task_and_loss_fn_together_is_an_error():
    with pytest.raises(ValueError, match="pass the loss to the task"):
        fit(nn.Linear(6, 3), [blobs().tensors], epochs=1, task=Classification(), loss_fn=F.mse_loss, **KW)
    with pytest.raises(TypeError, match="utils.train.Task"):
        fit(nn.Linear(6, 3), [blobs().tensors], epochs=1, task="detection", **KW)
