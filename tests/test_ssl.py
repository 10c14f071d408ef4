"""utils.ssl (chapter 09): NT-Xent against the loop formula of the SimCLR paper and against the
cross-entropy over the masked cosine-similarity matrix, InfoNCE, the triplet loss against
torch's, the contrastive loss against its definition, the batched augmentation against
torchvision's resized crop, and the SimCLR task through utils.train.fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from utils import ssl


def loop_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent as the SimCLR paper writes it, one anchor at a time, in float64."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    n = n2 // 2
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n2):
        p = (i + n) % n2
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[p] / t) / den)
    return total / n2


def masked_ce_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """The reference of issue 10: cross-entropy on the cosine-similarity matrix with the diagonal removed."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = F.cosine_similarity(z[:, None], z[None], dim=2) / t  # (2N, 2N)
    keep = ~torch.eye(2 * n, dtype=torch.bool)
    logits = sim[keep].view(2 * n, 2 * n - 1)  # row i without column i
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    target = pos - (pos > torch.arange(2 * n)).long()  # the positive's column once column i is gone
    return F.cross_entropy(logits, target)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0), (7, 32, 0.07)])
def test_nt_xent_matches_the_loop_formula_and_the_masked_cross_entropy(n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g) * 3, torch.randn(n, d, generator=g)
    got = ssl.nt_xent(z1, z2, t)
    assert got.shape == ()
    torch.testing.assert_close(got.double(), loop_nt_xent(z1, z2, t), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, masked_ce_nt_xent(z1, z2, t), atol=1e-5, rtol=1e-5)


def test_nt_xent_gradient_matches_the_reference_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    g1, g2 = torch.autograd.grad(ssl.nt_xent(z1, z2, 0.3), (z1, z2))
    r1, r2 = torch.autograd.grad(masked_ce_nt_xent(z1, z2, 0.3), (z1, z2))
    torch.testing.assert_close(g1, r1)
    torch.testing.assert_close(g2, r2)
    assert torch.autograd.gradcheck(lambda a, b: ssl.nt_xent(a, b, 0.3), (z1, z2))


def test_nt_xent_edge_cases():
    # identical embeddings everywhere: every other view is equally similar, loss = ln(2N - 1)
    z = torch.ones(4, 3)
    assert ssl.nt_xent(z, z, 0.5).item() == pytest.approx(math.log(7), abs=1e-5)
    # the scale of the embeddings does not matter (cosine similarity)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    torch.testing.assert_close(ssl.nt_xent(a, b), ssl.nt_xent(100 * a, 0.01 * b))
    # large logits (tiny temperature) stay finite
    assert torch.isfinite(ssl.nt_xent(a, b, 1e-3))
    # perfect views of orthogonal images: loss near 0 at a low temperature
    eye = torch.eye(4)
    assert ssl.nt_xent(eye, eye, 0.05).item() < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        ssl.nt_xent(a, b[:3])
    with pytest.raises(ValueError, match="at least 2"):
        ssl.nt_xent(a[:1], b[:1])
    with pytest.raises(ValueError, match="temperature"):
        ssl.nt_xent(a, b, 0.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        ssl.nt_xent(a[None], b[None])


def test_info_nce_against_loops_and_its_relation_to_nt_xent():
    g = torch.Generator().manual_seed(3)
    q, k, neg = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(4, 6, generator=g)
    qn, kn, nn_ = (F.normalize(t.double(), dim=1) for t in (q, k, neg))
    t = 0.2
    expected = 0.0
    for i in range(5):
        logits = torch.cat([kn @ qn[i], nn_ @ qn[i]]) / t
        expected -= logits[i] - torch.logsumexp(logits, 0)
    torch.testing.assert_close(
        ssl.info_nce(q, k, t, negatives=neg).double(), expected / 5, atol=1e-5, rtol=1e-5
    )
    # without extra negatives: plain cross-entropy of the similarity matrix with the diagonal as target
    plain = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t, torch.arange(5))
    torch.testing.assert_close(ssl.info_nce(q, k, t), plain)
    with pytest.raises(ValueError, match="pair up"):
        ssl.info_nce(q, k[:3])


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0, 3.0])
def test_triplet_loss_equals_torch(margin):
    g = torch.Generator().manual_seed(4)
    a, p, n = (torch.randn(9, 5, generator=g, requires_grad=True) for _ in range(3))
    got = ssl.triplet_loss(a, p, n, margin)
    ref = F.triplet_margin_loss(a, p, n, margin=margin)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, a)[0], torch.autograd.grad(ref, a)[0])
    with pytest.raises(ValueError, match="margin"):
        ssl.triplet_loss(a, p, n, 0.0)


def test_contrastive_loss_against_its_definition():
    g = torch.Generator().manual_seed(5)
    x1, x2 = (
        torch.randn(8, 3, generator=g, dtype=torch.float64),
        torch.randn(8, 3, generator=g, dtype=torch.float64),
    )
    same = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0])
    m = 2.0
    expected = 0.0
    for i in range(8):
        d = math.dist(x1[i].tolist(), x2[i].tolist())
        expected += d**2 if same[i] else max(0.0, m - d) ** 2
    expected /= 2 * 8
    assert ssl.contrastive_loss(x1, x2, same, m).item() == pytest.approx(expected, rel=1e-10)
    # a dissimilar pair beyond the margin costs nothing, an identical similar pair costs nothing
    far = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0]])
    assert ssl.contrastive_loss(*far, torch.tensor([0]), 2.0).item() == 0
    x = torch.randn(3, 2, requires_grad=True)
    loss = ssl.contrastive_loss(x, x.detach().clone(), torch.ones(3), 1.0)
    assert loss.item() == pytest.approx(0, abs=1e-10)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()  # d = 0 has a finite gradient
    with pytest.raises(ValueError, match="same must have shape"):
        ssl.contrastive_loss(x1, x2, same[:3])


# ---- augmentations -------------------------------------------------------------------------------


def test_resized_crop_grid_equals_torchvision_resized_crop():
    g = torch.Generator().manual_seed(6)
    img = torch.rand(2, 3, 20, 24, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 20.0, 24.0]])  # (top, left, h, w)
    grid = ssl.resized_crop_grid(boxes, (30, 36), (20, 24))
    got = F.grid_sample(img, grid, mode="bilinear", align_corners=False)
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(img[i], top, left, h, w, [30, 36], antialias=False)
        # bilinear interpolation at the same sample points; only the border rows differ (zero padding
        # outside the crop versus torchvision's clamping inside it)
        torch.testing.assert_close(got[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5, rtol=1e-5)
    # the whole image at its own size, flipped: exactly the mirrored image
    same = ssl.resized_crop_grid(
        torch.tensor([[0.0, 0.0, 20.0, 24.0]]), (20, 24), (20, 24), flip=torch.tensor([True])
    )
    out = F.grid_sample(img[:1], same, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, img[:1].flip(-1), atol=1e-5, rtol=0)
    # a rotation by 180 degrees of a square image is a flip of both axes
    sq = torch.rand(1, 1, 16, 16, generator=g)
    turn = ssl.resized_crop_grid(
        torch.tensor([[0.0, 0.0, 16.0, 16.0]]), (16, 16), (16, 16), angle=torch.tensor([math.pi])
    )
    torch.testing.assert_close(
        F.grid_sample(sq, turn, align_corners=False), sq.flip(-1, -2), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        ssl.resized_crop_grid(torch.zeros(4), (8, 8), (8, 8))


def test_augment_identity_when_every_randomness_is_off_and_views_differ_otherwise():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 1, 28, 28, generator=g)
    off = ssl.SimCLRAugment(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0, degrees=0, jitter=0, grayscale=0, blur=0
    )
    torch.testing.assert_close(off(x), x, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    aug = ssl.SimCLRAugment(size=20)
    v1, v2 = aug.two_views(x)
    assert v1.shape == v2.shape == (5, 1, 20, 20)
    assert v1.min() >= 0 and v1.max() <= 1
    assert (v1 - v2).abs().flatten(1).amax(1).min() > 0.05  # every image gets its own draw in each view
    rgb = torch.rand(4, 3, 16, 16, generator=g)
    assert aug(rgb).shape == (4, 3, 20, 20)


def test_augment_flip_probability_and_reproducibility():
    x = torch.linspace(0, 1, 8).expand(400, 1, 8, 8).contiguous()  # brighter to the right
    only_flip = ssl.SimCLRAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.3, degrees=0, jitter=0, blur=0)
    torch.manual_seed(1)
    out = only_flip(x)
    flipped = (out[:, 0, :, 0] > out[:, 0, :, -1]).all(1).float().mean().item()
    assert 0.22 < flipped < 0.38
    torch.manual_seed(1)
    torch.testing.assert_close(only_flip(x), out)  # the global generator decides: seeded, reproducible
    with pytest.raises(ValueError, match="probability"):
        ssl.SimCLRAugment(flip=1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        only_flip(x[0])


def test_simclr_task_trains_through_fit():
    from utils.train import fit

    torch.manual_seed(0)
    x = torch.rand(64, 1, 12, 12)
    encoder = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = nn.Sequential(encoder, ssl.ProjectionHead(8, 16, 8))
    loader = [(x[i : i + 32], torch.zeros(32, dtype=torch.long)) for i in range(0, 64, 32)]
    task = ssl.SimCLR(ssl.SimCLRAugment(), temperature=0.5)
    history = fit(model, loader, loader, epochs=2, task=task, device="cpu", progress=False, seed=0)
    assert len(history.train_loss) == 2 and all(math.isfinite(v) for v in history.train_loss)
    assert 0 <= history.val_acc[-1] <= 1
    # the loss of 32 images starts near ln(63) (nothing learnt) and the views' positives are the target
    assert history.train_loss[0] < math.log(63) + 0.5
    with pytest.raises(ValueError, match="temperature"):
        ssl.SimCLR(ssl.SimCLRAugment(), temperature=-1)
