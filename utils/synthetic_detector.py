"""A detector whose mistakes are set by hand, to study how detections are post-processed and scored.

Chapter 10 measures AP50, AP75 and AP@[.5:.95] against the size of the localisation errors, and mAP
against the NMS threshold, without training anything: :class:`SyntheticDetector` turns each image's
ground truth into detections with controlled faults:

* **localisation error** ``jitter``: each detection of an object of size ``(w, h)`` and centre
  ``(cx, cy)`` is ``(cx + w σ ε1, cy + h σ ε2, w e^{σ ε3}, h e^{σ ε4})`` with ``σ = jitter`` and
  ``ε ~ N(0, 1)``, so the IoU it reaches depends on ``jitter`` only, not on the object's size;
  ``pixel_jitter`` adds an error of that many pixels (standard deviation) to every coordinate, which
  costs small objects much more IoU than large ones, as the errors of a real detector do;
* **misses** ``recall``: each object is found with this probability;
* **duplicates** ``duplicates``: a found object gets a Poisson number of extra detections of the same
  kind, as a dense detector produces before non-maximum suppression;
* **false positives** ``false_positives``: a Poisson number per image of boxes where there is no
  object (shaped like the image's objects, placed anywhere);
* **confusion** ``wrong_label``: a detection gets another class with this probability.

Scores: ``sigmoid(N(tp_score, 1))`` for the detections of an object and ``sigmoid(N(fp_score, 1))``
for false positives, so that the two overlap as a real detector's do. Every draw comes from a
generator seeded by ``seed`` and the image's index: the same targets give the same detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SyntheticDetector"]


def _nonneg(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


@dataclass
class SyntheticDetector:
    """Detections with controlled faults (see the module docstring); ``detector(targets, image_size)``.

    ``targets`` is a list with one dict per image holding ``boxes`` ``Tensor[M, 4]`` (xyxy) and
    ``labels`` ``Tensor[M]`` (int, 1..``num_classes``); ``image_size`` is ``(height, width)``, to which
    every box is clipped. Returns one dict per image with ``boxes`` ``Tensor[K, 4]`` float32,
    ``scores`` ``Tensor[K]``, ``labels`` ``Tensor[K]`` int64 and ``source`` ``Tensor[K]`` int64 (the
    index of the object a detection comes from, -1 for a false positive), in no particular order:
    torchvision's detection format, which :mod:`utils.metrics.detection` reads. Chapter 10 uses it.
    """

    jitter: float = 0.1
    pixel_jitter: float = 0.0
    recall: float = 0.9
    duplicates: float = 0.0
    false_positives: float = 1.0
    wrong_label: float = 0.0
    num_classes: int = 4
    tp_score: float = 1.5
    fp_score: float = -0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("jitter", "pixel_jitter", "duplicates", "false_positives"):
            setattr(self, name, _nonneg(name, getattr(self, name)))
        for name in ("recall", "wrong_label"):
            if not 0.0 <= _nonneg(name, getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} is a probability, in [0, 1], got {getattr(self, name)!r}")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if self.wrong_label > 0 and self.num_classes < 2:
            raise ValueError("wrong_label > 0 needs at least two classes to confuse")

    def jitter_boxes(self, boxes: Tensor, generator: torch.Generator) -> Tensor:
        """Boxes ``Tensor[N, 4]`` (xyxy, float64) moved and resized by the relative error ``jitter``, then
        every coordinate moved by ``pixel_jitter`` pixels (standard deviations; corners kept in order)."""
        sigma = self.jitter
        boxes = boxes.to(torch.float64)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
        eps = torch.randn(len(boxes), 4, generator=generator, dtype=torch.float64)
        cx, cy = cx + w * sigma * eps[:, 0], cy + h * sigma * eps[:, 1]
        w, h = w * torch.exp(sigma * eps[:, 2]), h * torch.exp(sigma * eps[:, 3])
        out = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        if self.pixel_jitter > 0:
            out = out + self.pixel_jitter * torch.randn(len(out), 4, generator=generator, dtype=torch.float64)
            out = torch.cat([torch.minimum(out[:, :2], out[:, 2:]), torch.maximum(out[:, :2], out[:, 2:])], 1)
        return out

    def _image(self, target: Mapping[str, Tensor], size: tuple[int, int], index: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + index)
        gt = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"]).long().reshape(-1)
        if len(labels) != len(gt):
            raise ValueError(f"targets[{index}]: {len(gt)} boxes but {len(labels)} labels")
        found = torch.rand(len(gt), generator=g) < self.recall  # (M,)
        extra = torch.poisson(torch.full((len(gt),), self.duplicates, dtype=torch.float64), generator=g)
        copies = torch.where(found, 1 + extra.long(), torch.zeros_like(extra.long()))  # detections per object
        source = torch.repeat_interleave(torch.arange(len(gt)), copies)  # (K_true,)
        boxes = self.jitter_boxes(gt[source], g)
        det_labels = labels[source]
        scores = torch.sigmoid(self.tp_score + torch.randn(len(source), generator=g, dtype=torch.float64))

        n_fp = int(torch.poisson(torch.tensor([self.false_positives]), generator=g).item())
        if n_fp:
            height, width = size
            if len(gt):  # shaped like this image's objects
                wh = (gt[:, 2:] - gt[:, :2])[torch.randint(len(gt), (n_fp,), generator=g)]
            else:
                wh = torch.tensor([[width, height]], dtype=torch.float64) * (
                    0.1 + 0.3 * torch.rand(n_fp, 1, generator=g, dtype=torch.float64)
                )
            corner = torch.rand(n_fp, 2, generator=g, dtype=torch.float64) * (
                torch.tensor([width, height], dtype=torch.float64) - wh
            ).clamp(min=0)
            boxes = torch.cat([boxes, torch.cat([corner, corner + wh], dim=1)])
            det_labels = torch.cat([det_labels, torch.randint(1, self.num_classes + 1, (n_fp,), generator=g)])
            fp_scores = torch.sigmoid(self.fp_score + torch.randn(n_fp, generator=g, dtype=torch.float64))
            scores = torch.cat([scores, fp_scores])
            source = torch.cat([source, torch.full((n_fp,), -1, dtype=torch.int64)])

        if self.wrong_label > 0 and len(det_labels):
            confused = torch.rand(len(det_labels), generator=g) < self.wrong_label
            shift = torch.randint(1, self.num_classes, (len(det_labels),), generator=g)
            det_labels = torch.where(confused, (det_labels - 1 + shift) % self.num_classes + 1, det_labels)

        height, width = size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return {
            "boxes": boxes.float(),
            "scores": scores.float(),
            "labels": det_labels.long(),
            "source": source,
        }

    def __call__(
        self, targets: Sequence[Mapping[str, Tensor]], image_size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        if isinstance(targets, Mapping) or not isinstance(targets, Sequence):
            raise TypeError("targets must be a list with one dict per image (wrap a single image in [...])")
        if not isinstance(image_size, (tuple, list)) or len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(f"image_size must be (height, width), got {image_size!r}")
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
                raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        return [self._image(t, tuple(image_size), i) for i, t in enumerate(targets)]
