"""The vision tasks of utils.train with their default metrics, the real ones of utils.metrics: what `fit`
logs at the end of an epoch is what the metric computes on the same predictions by itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.data import ShapesScenes, collate_scenes
from utils.metrics.detection import coco_map
from utils.metrics.segmentation import SegmentationMetrics
from utils.train import Detection, Segmentation, fit


def _key(image: torch.Tensor) -> bytes:
    return image.detach().cpu().numpy().tobytes()


class LookupDetector(nn.Module):
    """Follows torchvision's convention. In eval mode it answers with the ground truth of each image it
    was shown (looked up by the image's bytes), every box moved right by ``shift`` pixels, with scores
    that fall with the box's index; in train mode its "loss" pulls one parameter towards 1."""

    def __init__(self, scenes, shift: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.truth = {_key(s["image"]): (s["boxes"], s["labels"]) for s in scenes}
        self.shift = shift

    def forward(self, images, targets=None):
        if self.training:
            return {"loss_a": (self.w - 1) ** 2, "loss_b": 0.5 * (self.w - 1) ** 2}
        out = []
        for image in images:
            boxes, labels = self.truth[_key(image)]
            boxes = boxes + torch.tensor([self.shift, 0.0, self.shift, 0.0])
            scores = torch.linspace(1.0, 0.5, len(boxes))
            out.append({"boxes": boxes, "scores": scores, "labels": labels})
        return out


@pytest.fixture(scope="module")
def scenes():
    return ShapesScenes(24, seed=3, size=48)


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_detection_logs_the_map_that_coco_map_computes(scenes, shift):
    loader = DataLoader(scenes, batch_size=8, collate_fn=collate_scenes)
    model = LookupDetector(list(scenes), shift=shift)
    history = fit(model, loader, loader, epochs=2, task=Detection(), lr=0.1, progress=False, seed=0)
    # the training losses are logged one by one and their sum is the loss
    assert history["train_loss"][0] == pytest.approx(
        history["train_loss_a"][0] + history["train_loss_b"][0], rel=1e-6
    )
    assert history["train_loss"][1] < history["train_loss"][0]  # the parameter moved towards 1
    with torch.no_grad():
        model.eval()
        preds = [p for batch in loader for p in model(list(batch["image"]))]
    targets = [{"boxes": s["boxes"], "labels": s["labels"]} for s in scenes]
    expected = coco_map(preds, targets)
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert history[f"val_{name}"][-1] == pytest.approx(float(expected[name]), abs=1e-12), name
    if shift == 0:
        assert history["val_map"][-1] == pytest.approx(1.0)
    else:  # a 3-pixel shift on 7-19 px objects: every box still overlaps, the strict thresholds fail
        assert history["val_map_50"][-1] > history["val_map_75"][-1] and history["val_map"][-1] < 0.9


def test_detection_early_stops_on_map_with_mode_max(scenes):
    loader = DataLoader(scenes, batch_size=8, collate_fn=collate_scenes)
    history = fit(
        LookupDetector(list(scenes)),
        loader,
        loader,
        epochs=6,
        task=Detection(),
        early_stopping=2,
        monitor="val_map",
        progress=False,
        seed=0,
    )
    # mAP is 1 from the first epoch and never improves: stopped after the patience, best epoch the first
    assert history.best_epoch == 0 and history.stopped_early and len(history["val_map"]) == 3


class LookupSegmenter(nn.Module):
    """Logits that put the true class of each pixel ahead by ``margin`` (or a wrong class where ``noise``
    flips the pixel), for images it was shown; a bias makes the training loss fall."""

    def __init__(self, scenes, num_classes: int, noise: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        g = torch.Generator().manual_seed(0)
        self.masks = {}
        for s in scenes:
            mask = s["semantic_mask"].clone()
            flip = torch.rand(mask.shape, generator=g) < noise
            mask[flip] = (mask[flip] + 1) % num_classes
            self.masks[_key(s["image"])] = mask
        self.num_classes = num_classes

    def forward(self, x):
        masks = torch.stack([self.masks[_key(image)] for image in x])  # (B, H, W)
        logits = 4.0 * nn.functional.one_hot(masks, self.num_classes).permute(0, 3, 1, 2).float()
        return logits + self.bias


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_segmentation_logs_the_miou_that_segmentation_metrics_computes(scenes, noise):
    c = scenes.num_classes
    loader = DataLoader(scenes, batch_size=8, collate_fn=collate_scenes)
    model = LookupSegmenter(list(scenes), c, noise)
    history = fit(model, loader, loader, epochs=1, task=Segmentation(c), progress=False, seed=0)
    metric = SegmentationMetrics(c)
    with torch.no_grad():
        for batch in loader:
            metric.update(model(batch["image"]), batch["semantic_mask"])
    expected = metric.compute()
    assert history["val_miou"][-1] == pytest.approx(float(expected["miou"]), abs=1e-12)
    assert history["val_pixel_accuracy"][-1] == pytest.approx(float(expected["pixel_accuracy"]), abs=1e-12)
    if noise == 0:
        assert history["val_miou"][-1] == pytest.approx(1.0)
    else:
        assert 0.3 < history["val_miou"][-1] < 0.9 and math.isfinite(history["val_loss"][-1])
