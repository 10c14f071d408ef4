"""utils.augment (chapter 05): MixUp and CutMix give exactly what torchvision.transforms.v2 gives, the
label weights follow the pixels, the collate function feeds utils.train.fit, and bad input fails clearly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from utils import augment


def _batch(n=6, c=3, h=9, w=11, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_mixup_equals_torchvision(alpha, seed):
    x, y = _batch(seed=seed)
    torch.manual_seed(seed)
    ref = v2.MixUp(num_classes=5, alpha=alpha)(x, y)
    torch.manual_seed(seed)
    ours = augment.mixup(x, y, num_classes=5, alpha=alpha)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


@pytest.mark.parametrize("alpha", [0.2, 1.0])
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size", [(9, 11), (28, 28), (5, 3)])
def test_cutmix_equals_torchvision(alpha, seed, size):
    x, y = _batch(h=size[0], w=size[1], seed=seed)
    torch.manual_seed(seed)
    ref = v2.CutMix(num_classes=5, alpha=alpha)(x, y)
    torch.manual_seed(seed)
    ours = augment.cutmix(x, y, num_classes=5, alpha=alpha)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


def test_mixed_labels_follow_the_images():
    n, k = 5, 7
    # image i is all i
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 2, 16, 16).contiguous()
    y = torch.arange(n)
    images, soft = augment.mixup(x, y, num_classes=k, lam=0.3)
    assert torch.allclose(images[:, 0, 0, 0], 0.3 * y + 0.7 * y.roll(1))
    assert torch.allclose(soft.sum(1), torch.ones(n))
    assert torch.allclose(soft[torch.arange(n), y], torch.full((n,), 0.3))
    for seed in range(10):
        torch.manual_seed(seed)
        images, soft = augment.cutmix(x, y, num_classes=k)
        own = (images[:, 0] == y.reshape(n, 1, 1).float()).float().mean(dim=(1, 2))  # fraction of own pixels
        assert torch.allclose(soft[torch.arange(n), y], own)
        assert torch.allclose(soft.sum(1), torch.ones(n))
    images, soft = augment.mixup(x, y, num_classes=k, lam=1.0)
    assert torch.equal(images, x) and torch.equal(soft, F.one_hot(y, k).float())
    images, soft = augment.cutmix(x, y, num_classes=k, lam=1.0)  # an empty box: nothing pasted
    assert torch.equal(images, x) and torch.equal(soft, F.one_hot(y, k).float())


def test_probability_labels_pass_through():
    x, y = _batch()
    probs = F.one_hot(y, 5).float()
    a = augment.mixup(x, y, num_classes=5, lam=0.6)
    b = augment.mixup(x, probs, num_classes=5, lam=0.6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: augment.mixup(torch.rand(3, 8, 8), torch.zeros(3, dtype=torch.long), num_classes=2),
            r"\(N, C, H, W\)",
        ),
        (
            lambda: augment.mixup(torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), num_classes=2),
            "one row per image",
        ),
        (
            lambda: augment.mixup(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]), num_classes=2),
            r"lie in \[0, 1\]",
        ),
        (
            lambda: augment.mixup(torch.rand(3, 1, 8, 8), torch.zeros(3), num_classes=2),
            "integer class indices",
        ),
        (
            lambda: augment.cutmix(
                torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long), num_classes=2, lam=1.5
            ),
            "lam",
        ),
        (lambda: augment.sample_lambda(0.0), "alpha"),
        (lambda: augment.MixCollate(1), "num_classes"),
        (lambda: augment.MixCollate(3, p_off=2.0), "p_mixup and p_off"),
        (lambda: augment.train_augmentation(translate=1.5), "translate"),
    ],
)
def test_bad_input_fails_clearly(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mix_collate_picks_mixup_cutmix_or_nothing():
    items = [(torch.rand(1, 8, 8), i % 3) for i in range(6)]
    images, labels = torch.utils.data.default_collate(items)
    torch.manual_seed(0)
    out = augment.MixCollate(3, p_mixup=1.0, mixup_alpha=0.4)(items)
    torch.manual_seed(0)
    torch.rand(())  # the coin that chose MixUp
    ref = augment.mixup(images, labels, num_classes=3, alpha=0.4)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    out = augment.MixCollate(3, p_off=1.0)(items)
    assert torch.equal(out[0], images) and torch.equal(out[1], F.one_hot(labels, 3).float())
    torch.manual_seed(1)
    out = augment.MixCollate(3, p_mixup=0.0)(items)
    assert out[1].shape == (6, 3) and torch.allclose(out[1].sum(1), torch.ones(6))
    assert "MixCollate(num_classes=3" in repr(augment.MixCollate(3))


def quadrant_images(n, generator):
    """(n, 1, 8, 8) noise with one bright 4x4 quadrant; the label (0-3) says which: a learnable task."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = 0.3 * torch.rand(n, 1, 8, 8, generator=generator)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        images[i, 0, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 0.7
    return images, labels


def test_mix_collate_trains_with_fit():
    import utils.train

    g = torch.Generator().manual_seed(0)
    train = TensorDataset(*quadrant_images(256, g))
    val = TensorDataset(*quadrant_images(128, g))
    loader = DataLoader(
        train,
        batch_size=16,
        shuffle=True,
        collate_fn=augment.MixCollate(4),
        generator=torch.Generator().manual_seed(0),
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    history = utils.train.fit(
        model, loader, DataLoader(val, batch_size=64), epochs=8, lr=0.05, progress=False, device="cpu", seed=0
    )
    assert len(history) == 8
    assert all(acc != acc for acc in history.train_acc)  # NaN: soft targets have no single right class
    # it learns from the mixed batches: the loss falls and the (unmixed) validation images are classified
    assert history.train_loss[-1] < 0.7 * history.train_loss[0]
    assert history.val_loss[-1] < 0.25 * math.log(4) and history.val_acc[-1] > 0.9  # chance: ln 4, 0.25


def test_train_augmentation_keeps_shape_range_and_labels():
    torch.manual_seed(0)
    image = torch.rand(1, 28, 28)
    pipeline = augment.train_augmentation()
    assert isinstance(pipeline, v2.Compose)
    for _ in range(5):
        out = pipeline(image)
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    flip_only = augment.train_augmentation(degrees=0, translate=0, scale=(1.0, 1.0))
    outs = [flip_only(image) for _ in range(20)]
    assert all(torch.equal(o, image) or torch.equal(o, image.flip(-1)) for o in outs)
    assert any(torch.equal(o, image.flip(-1)) for o in outs) and any(torch.equal(o, image) for o in outs)
    erasing = augment.train_augmentation(flip=False, degrees=0, translate=0, scale=(1.0, 1.0), erase=1.0)
    assert (erasing(torch.ones(1, 28, 28)) == 0).any()
    assert torch.equal(
        augment.train_augmentation(flip=False, degrees=0, translate=0, scale=(1.0, 1.0))(image), image
    )
