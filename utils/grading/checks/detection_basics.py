"""Chapter 10 (assignment ``10_detection_basics``): the box operations, NMS and average precision,
checked against torchvision, the course's metric and pycocotools.

Every case draws fresh random boxes from the generator it is given; the expected values come from
``torchvision.ops``, torchvision's ``BoxCoder`` and :mod:`utils.metrics.detection` (whose COCO numbers
equal pycocotools', tests/test_checks_detection_basics.py checks it on the same cases), computed in
the grading process. One point per implement question. Tolerances: float32 ``1e-5 + 1e-5 * |expected|``
(the coder ``1e-4``), float64 ``1e-10 + 1e-8 * |expected|``; NMS indices must match exactly; AP within
``1e-9``.

* q1 ``box_iou(boxes1, boxes2)`` and ``generalized_box_iou(boxes1, boxes2)``: pairwise ``(N, M)``
  matrices like ``torchvision.ops``; disjoint, identical, nested and zero-area boxes, no boxes at
  all (N = 0), float64 and large coordinates.
* q2 ``nms(boxes, scores, iou_threshold)`` and ``batched_nms(boxes, scores, idxs, iou_threshold)``:
  the kept indices by decreasing score, exactly as ``torchvision.ops``; thresholds 0 to 1, identical
  boxes, one box, none, class ids that are not 0..C-1, boxes that overlap across classes.
* q3 ``encode_boxes(boxes, anchors, weights)`` and ``decode_boxes(offsets, anchors, weights, clamp)``:
  like torchvision's ``BoxCoder(weights, bbox_xform_clip=clamp)``; weights (1, 1, 1, 1) and
  (10, 10, 5, 5), float64, the round trip, and width / height offsets above the clamp.
* q4 ``average_precision(detections, targets, iou_threshold, method)``: the AP of one class over many
  images, ``"all_points"`` (VOC 2010+, the package's ``voc_ap`` of ``precision_recall``) and
  ``"101point"`` (COCO, the package's ``coco_map`` at one threshold, equal to pycocotools'); images
  without detections or without objects, IoU thresholds 0.5 and 0.75.
* q5 (make it work, 2 points) ``postprocess(raw)``: the raw output of a dense detector on crowded scenes
  (duplicates, confused classes, low-scoring false positives) turned into the final detections; scored
  by F1 at IoU 0.5 on 200 scenes from a secret seed, which the exercise never sees: 2 points from 0.73,
  1 from 0.67 (class-aware NMS at 0.5 with a score threshold of 0.5 gives 0.68 to 0.70, thresholds
  tuned on the validation scenes 0.75 to 0.78); 30 s for all images.
* r1-r6 (review, half a point each): anchor counts of a feature pyramid, IoU and GIoU of given boxes,
  AP of a ranked list by hand, a decoded box coordinate, and a multiple-choice question on NMS.

Forbidden while the answers of q1-q4 run (:mod:`utils.grading.forbid`): ``torchvision.ops``,
torchvision's ``BoxCoder`` (q3), and the course's own ``utils.ops`` / ``utils.metrics`` (``COURSE``);
pycocotools and scikit-learn in q4.
"""

from __future__ import annotations

import functools
import math

import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from ..challenge import MakeItWork, _detections
from ..core import Case, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "10_detection_basics"
TITLE = "Detection basics: boxes, NMS and average precision"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-10, "rtol": 1e-8}}
CODER_TOL = {F32: {"atol": 1e-4, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}


def random_boxes(g: torch.Generator, n: int, size: float = 100.0, dtype: torch.dtype = F32) -> torch.Tensor:
    """``n`` xyxy boxes with corners in [0, size] and sides from 2% to 50% of ``size``: ``Tensor[n, 4]``."""
    xy = torch.rand(n, 2, generator=g, dtype=F64) * size * 0.8
    wh = (0.02 + 0.48 * torch.rand(n, 2, generator=g, dtype=F64)) * size
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def _fix_corners(boxes: torch.Tensor) -> torch.Tensor:
    """x1 <= x2 and y1 <= y2 (a jitter may swap them)."""
    x = torch.stack([boxes[:, 0], boxes[:, 2]], 1).sort(1).values
    y = torch.stack([boxes[:, 1], boxes[:, 3]], 1).sort(1).values
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def jittered_boxes(g: torch.Generator, clusters: int, per: int, dtype: torch.dtype = F32) -> torch.Tensor:
    """``clusters`` random boxes, each repeated ``per`` times with a 15% jitter: ``Tensor[clusters * per, 4]``
    (what a dense detector outputs before NMS)."""
    base = random_boxes(g, clusters, dtype=F64).repeat_interleave(per, 0)
    wh = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    return _fix_corners(base + 0.15 * wh * torch.randn(len(base), 4, generator=g, dtype=F64)).to(dtype)


# --------------------------------------------------------------------------- q1 IoU and GIoU

IOU_HINT = (
    "pairwise: intersect every box of boxes1 (N, 4) with every box of boxes2 (M, 4) by broadcasting "
    "(boxes1[:, None, :2] against boxes2[None, :, :2]); the intersection's width and height are "
    "(min of the x2s - max of the x1s).clamp(min=0), so disjoint boxes give 0, not a negative area; "
    "IoU = inter / (area1[:, None] + area2[None, :] - inter); keep the dtype of the boxes"
)
GIOU_HINT = (
    "GIoU = IoU - (C - U) / C with U the union and C the area of the smallest box enclosing both "
    "(the min of the x1s and y1s, the max of the x2s and y2s, pairwise); it is negative for disjoint "
    "boxes and 1 for identical ones"
)


def iou_cases(g: torch.Generator) -> list[Case]:
    a, b = random_boxes(g, 6), random_boxes(g, 9)
    left = random_boxes(g, 4, size=40.0)  # in [0, 40]
    right = random_boxes(g, 3, size=40.0) + 60.0  # in [60, 100]: no overlap with `left`
    same = random_boxes(g, 5)
    flat = random_boxes(g, 4)
    flat[:2, 3] = flat[:2, 1]  # zero height
    flat[2:, 2] = flat[2:, 0]  # zero width
    nested = random_boxes(g, 3)
    inner = nested + torch.tensor([1.0, 1.0, -1.0, -1.0]) * 0.1 * (nested[:, 2:] - nested[:, :2]).repeat(1, 2)
    inputs = [
        ("N=6 by M=9, float32", a, b),
        ("disjoint boxes (IoU 0; GIoU negative)", left, right),
        ("identical boxes (the diagonal is 1)", same, same.clone()),
        ("zero-area boxes against ordinary ones", flat, random_boxes(g, 5)),
        ("boxes inside boxes", nested, inner),
        ("no boxes in boxes1 (N=0)", torch.zeros(0, 4), random_boxes(g, 3)),
        ("float64", random_boxes(g, 7, dtype=F64), random_boxes(g, 4, dtype=F64)),
        ("large coordinates (x 1e4), float64", random_boxes(g, 5, 1e4, F64), random_boxes(g, 6, 1e4, F64)),
    ]
    cases = []
    for label, x, y in inputs:
        args = {"boxes1": x, "boxes2": y}
        cases.append(
            Case(
                f"IoU, {label}",
                "box_iou",
                dict(args),
                torchvision.ops.box_iou(x, y),
                **TOL[x.dtype],
                hint=IOU_HINT,
                unchanged=("boxes1", "boxes2"),
            )
        )
        cases.append(
            Case(
                f"GIoU, {label}",
                "generalized_box_iou",
                dict(args),
                torchvision.ops.generalized_box_iou(x, y),
                **TOL[x.dtype],
                hint=GIOU_HINT,
                unchanged=("boxes1", "boxes2"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 NMS

NMS_HINT = (
    "sort by decreasing score (torch.argsort(scores, descending=True)); repeatedly keep the best "
    "remaining box and drop every remaining box whose IoU with it is strictly greater than "
    "iou_threshold (IoU == threshold survives); return the kept indices into the original boxes, "
    "int64, in the order they were kept (decreasing score)"
)
BATCHED_HINT = (
    "boxes of different idxs never suppress each other: run nms per class and merge the kept indices "
    "sorted by decreasing score (or shift each class's boxes by idx * (max coordinate + 1) so that they "
    "cannot overlap, and run one nms); idxs are arbitrary integers, not necessarily 0..C-1"
)


def nms_cases(g: torch.Generator) -> list[Case]:
    def scores(n: int, dtype: torch.dtype = F32) -> torch.Tensor:
        return torch.randperm(n, generator=g).to(dtype) / n + 0.01 * torch.rand(n, generator=g, dtype=dtype)

    cluster = jittered_boxes(g, 6, 5)
    same = random_boxes(g, 1).repeat(4, 1)
    inputs = [  # (label, boxes, scores, threshold)
        ("6 clusters of 5 boxes, threshold 0.5", cluster, scores(30), 0.5),
        ("the same boxes, threshold 0.3", cluster, scores(30), 0.3),
        ("the same boxes, threshold 0.7", cluster, scores(30), 0.7),
        ("threshold 0 (any overlap suppresses)", jittered_boxes(g, 4, 4), scores(16), 0.0),
        (
            "threshold 1 (only IoU > 1 would suppress: everything is kept)",
            jittered_boxes(g, 3, 4),
            scores(12),
            1.0,
        ),
        ("four identical boxes (IoU 1): only the best survives", same, scores(4), 0.5),
        ("one box", random_boxes(g, 1), torch.rand(1, generator=g), 0.5),
        ("no boxes", torch.zeros(0, 4), torch.zeros(0), 0.5),
        ("float64, 40 boxes", jittered_boxes(g, 8, 5, F64), scores(40, F64), 0.45),
    ]
    cases = []
    for label, boxes, s, threshold in inputs:
        cases.append(
            Case(
                f"nms, {label}",
                "nms",
                {"boxes": boxes, "scores": s, "iou_threshold": threshold},
                torchvision.ops.nms(boxes, s, threshold),
                hint=NMS_HINT,
                unchanged=("boxes", "scores"),
            )
        )
    for label, boxes, idxs, threshold in [
        (
            "3 classes in overlapping clusters",
            jittered_boxes(g, 5, 6),
            torch.randint(0, 3, (30,), generator=g),
            0.5,
        ),
        (
            "class ids 7, 3 and 100",
            jittered_boxes(g, 4, 5),
            torch.tensor([7, 3, 100])[torch.randint(0, 3, (20,), generator=g)],
            0.4,
        ),
        (
            "identical boxes of two classes: one of each survives",
            random_boxes(g, 1).repeat(6, 1),
            torch.tensor([0, 1, 0, 1, 0, 1]),
            0.5,
        ),
        (
            "a single class (the same as nms)",
            jittered_boxes(g, 4, 4),
            torch.zeros(16, dtype=torch.int64),
            0.5,
        ),
        ("no boxes", torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 0.5),
    ]:
        s = scores(len(boxes))
        cases.append(
            Case(
                f"batched_nms, {label}",
                "batched_nms",
                {"boxes": boxes, "scores": s, "idxs": idxs, "iou_threshold": threshold},
                torchvision.ops.batched_nms(boxes, s, idxs, threshold),
                hint=BATCHED_HINT,
                unchanged=("boxes", "scores", "idxs"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 the box coder

DEFAULT_CLAMP = math.log(1000.0 / 16)
ENCODE_HINT = (
    "with the centres (cx, cy) and sizes (w, h) of the boxes and of their anchors (subscript a): "
    "t = (wx (cx - cx_a) / w_a, wy (cy - cy_a) / h_a, ww log(w / w_a), wh log(h / h_a)); widths are "
    "x2 - x1 (no + 1) and centres x1 + w / 2"
)
DECODE_HINT = (
    "invert the encoding: dx = t[:, 0] / wx, ..., dw = t[:, 2] / ww; clamp dw and dh from above at "
    "`clamp` BEFORE exp (so that exp cannot overflow); cx = dx w_a + cx_a, w = exp(dw) w_a, then the "
    "corners cx -/+ w / 2 and cy -/+ h / 2; keep the dtype of the offsets"
)


def coder_cases(g: torch.Generator) -> list[Case]:
    def pairs(n: int, dtype: torch.dtype = F32) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = random_boxes(g, n, dtype=F64)
        wh = (anchors[:, 2:] - anchors[:, :2]).repeat(1, 2)
        boxes = _fix_corners(anchors + 0.3 * wh * torch.randn(n, 4, generator=g, dtype=F64))
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)  # no zero-size box
        return boxes.to(dtype), anchors.to(dtype)

    cases = []
    for label, (boxes, anchors), weights in [
        ("weights (1, 1, 1, 1)", pairs(12), (1.0, 1.0, 1.0, 1.0)),
        ("weights (10, 10, 5, 5) (Faster R-CNN's)", pairs(12), (10.0, 10.0, 5.0, 5.0)),
        ("weights (2, 3, 4, 5): each its own coordinate", pairs(8), (2.0, 3.0, 4.0, 5.0)),
        ("float64", pairs(10, F64), (10.0, 10.0, 5.0, 5.0)),
        ("one box", pairs(1), (1.0, 1.0, 1.0, 1.0)),
    ]:
        coder = BoxCoder(weights)
        cases.append(
            Case(
                f"encode_boxes, {label}",
                "encode_boxes",
                {"boxes": boxes, "anchors": anchors, "weights": weights},
                coder.encode_single(boxes, anchors),
                **CODER_TOL[boxes.dtype],
                hint=ENCODE_HINT,
                unchanged=("boxes", "anchors"),
            )
        )
    for label, n, dtype, weights, scale, clamp in [
        ("weights (1, 1, 1, 1)", 12, F32, (1.0, 1.0, 1.0, 1.0), 0.5, DEFAULT_CLAMP),
        ("weights (10, 10, 5, 5)", 12, F32, (10.0, 10.0, 5.0, 5.0), 3.0, DEFAULT_CLAMP),
        ("float64, weights (2, 3, 4, 5)", 10, F64, (2.0, 3.0, 4.0, 5.0), 2.0, DEFAULT_CLAMP),
        (
            "width and height offsets far above the clamp (up to 50)",
            8,
            F32,
            (1.0, 1.0, 1.0, 1.0),
            25.0,
            DEFAULT_CLAMP,
        ),
        ("a clamp of 1.0, weights (10, 10, 5, 5)", 8, F32, (10.0, 10.0, 5.0, 5.0), 8.0, 1.0),
    ]:
        anchors = random_boxes(g, n, dtype=dtype)
        offsets = scale * torch.randn(n, 4, generator=g, dtype=dtype)
        if "far above" in label:
            offsets[:, 2:] = offsets[:, 2:].abs() + 10.0
        coder = BoxCoder(weights, bbox_xform_clip=clamp)
        cases.append(
            Case(
                f"decode_boxes, {label}",
                "decode_boxes",
                {"offsets": offsets, "anchors": anchors, "weights": weights, "clamp": clamp},
                coder.decode_single(offsets, anchors),
                **CODER_TOL[dtype],
                hint=DECODE_HINT,
                unchanged=("offsets", "anchors"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 average precision

AP_HINT = (
    "pool the detections of all images and sort them by decreasing score; going down the list, a "
    "detection is a true positive when its IoU with a ground-truth box of ITS image that no earlier "
    "detection took is >= iou_threshold (take the unmatched box of highest IoU), else a false "
    "positive; precision = TP / (TP + FP) and recall = TP / (all ground-truth boxes, found or not) "
    "after each detection; make precision non-increasing from the right (the envelope); "
    "'all_points': sum of (recall step) x (envelope there); '101point': the mean of the envelope at "
    "recall 0, 0.01, ..., 1 (the envelope at the first point whose recall >= r; 0 beyond the last recall)"
)


def _with_labels(detections: list[dict], targets: list[dict]) -> tuple[list[dict], list[dict]]:
    preds = [{**d, "labels": torch.ones(len(d["boxes"]), dtype=torch.int64)} for d in detections]
    gts = [{**t, "labels": torch.ones(len(t["boxes"]), dtype=torch.int64)} for t in targets]
    return preds, gts


def reference_ap(detections: list[dict], targets: list[dict], iou_threshold: float, method: str) -> float:
    """The AP of one class by the package: ``voc_ap`` of ``precision_recall`` or COCO's 101 points."""
    from utils.metrics.detection import coco_map, precision_recall, voc_ap

    preds, gts = _with_labels(detections, targets)
    if method == "101point":
        return float(coco_map(preds, gts, iou_thresholds=[iou_threshold])["map"])
    curve = precision_recall(preds, gts, iou_threshold=iou_threshold)
    return voc_ap(curve.recall, curve.precision, "all_points")


def random_detections(
    g: torch.Generator, images: int, jitter: float = 0.1, size: float = 100.0
) -> tuple[list[dict], list[dict]]:
    """One class: ground truth of 0-5 boxes per image, and detections (found objects, duplicates and
    false positives, distinct scores, at most 40 per image). Image 0 has no detection, image 1 no object;
    the number of objects is odd and not a multiple of 5."""
    detections, targets = [], []
    for i in range(images):
        m = 0 if i == 1 else int(torch.randint(1, 6, (1,), generator=g))
        gt = random_boxes(g, m, size, F64)
        found = gt[torch.rand(m, generator=g) < 0.8]
        found = torch.cat([found, found[torch.rand(len(found), generator=g) < 0.3]])  # duplicates
        wh = (found[:, 2:] - found[:, :2]).repeat(1, 2)
        found = _fix_corners(found + jitter * wh * torch.randn(len(found), 4, generator=g, dtype=F64))
        fp = random_boxes(g, int(torch.randint(0, 3, (1,), generator=g)), size, F64)
        boxes = torch.cat([found, fp]) if i != 0 else torch.zeros(0, 4, dtype=F64)
        targets.append({"boxes": gt.float()})
        detections.append({"boxes": boxes.float(), "scores": torch.zeros(len(boxes))})
    # Recall is TP / (number of objects): with a number of objects prime to 10 it never lands exactly on
    # one of COCO's recall points k / 100, where np.linspace and torch.linspace differ in the last bit.
    while math.gcd(sum(len(t["boxes"]) for t in targets), 10) != 1:
        fullest = max(range(images), key=lambda k: len(targets[k]["boxes"]))
        targets[fullest]["boxes"] = targets[fullest]["boxes"][:-1]
    n = sum(len(d["boxes"]) for d in detections)
    scores = (torch.randperm(n, generator=g).float() + 1) / (n + 1)  # distinct: no ties to break
    start = 0
    for d in detections:
        d["scores"] = scores[start : start + len(d["boxes"])]
        start += len(d["boxes"])
    return detections, targets


def ap_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, images, jitter, threshold in [
        ("12 images, IoU 0.5", 12, 0.1, 0.5),
        ("20 images, IoU 0.75", 20, 0.1, 0.75),
        ("8 images, larger localisation errors, IoU 0.5", 8, 0.25, 0.5),
        ("3 images, IoU 0.5", 3, 0.05, 0.5),
    ]:
        detections, targets = random_detections(g, images, jitter)
        for method in ("all_points", "101point"):
            cases.append(
                Case(
                    f"{method}, {label}",
                    "average_precision",
                    {
                        "detections": detections,
                        "targets": targets,
                        "iou_threshold": threshold,
                        "method": method,
                    },
                    reference_ap(detections, targets, threshold, method),
                    atol=1e-9,
                    hint=AP_HINT,
                )
            )
    return cases


# --------------------------------------------------------------------------- q5 make it work

RAW_DETECTOR = {  # the settings of the dense detector whose raw output q5 post-processes
    "jitter": 0.08,
    "duplicates": 4.0,
    "recall": 0.95,
    "false_positives": 3.0,
    "wrong_label": 0.15,
}
CROWDED = {"size": 128, "min_objects": 6, "max_objects": 12, "scale": (0.3, 0.6), "min_visible": 0.25}
N_PREVIEW, N_HELD_OUT = 40, 200


def crowded_scenes(n: int, seed: int) -> list[dict]:
    """The ground truth of ``n`` crowded shape scenes (``boxes`` continuous xyxy, ``labels`` 1-4)."""
    import utils.data

    out, index = [], 0
    while len(out) < n:
        try:
            s = utils.data.make_scene(seed * 1_000_003 + index, **CROWDED)
            out.append(
                {"boxes": s["boxes"].float() + torch.tensor([0.0, 0.0, 1.0, 1.0]), "labels": s["labels"]}
            )
        except ValueError:  # a scene that cannot hold min_objects
            pass
        index += 1
    return out


def raw_detections(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``(raw, targets)``: a dense detector's output before NMS on ``n`` crowded scenes (one dict of
    ``boxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) per image) and their ground truth."""
    from utils.synthetic_detector import SyntheticDetector

    targets = crowded_scenes(n, seed)
    raw = SyntheticDetector(**RAW_DETECTOR, seed=seed)(targets, (128, 128))
    return [{k: d[k] for k in ("boxes", "scores", "labels")} for d in raw], targets


@functools.lru_cache(maxsize=1)
def _validation() -> tuple[list[dict], list[dict]]:
    return raw_detections(N_PREVIEW, seed=10)


def validation_detections() -> tuple[list[dict], list[dict]]:
    """The data of q5 the exercise may use: raw detections and ground truth of 40 validation scenes
    (drawn once per process; each call returns fresh copies)."""
    raw, targets = _validation()
    return [{k: v.clone() for k, v in d.items()} for d in raw], [
        {k: v.clone() for k, v in t.items()} for t in targets
    ]


def _held_out(seed: int) -> tuple[list[dict], list[dict]]:
    return raw_detections(N_HELD_OUT, seed=1_000 + int(seed) % 1_000_000)


def _preview(seed: int) -> tuple[list[dict], list[dict]]:
    del seed
    return validation_detections()


def f1_at_50(outputs: list, targets: list[dict]) -> float:
    """F1 of the final detections at IoU 0.5 (class-aware, one detection per object, by decreasing
    score, as COCO matches), counted over all images: what a deployed detector's boxes are worth."""
    from utils.metrics.matching import match_detections

    preds = _detections(outputs, [len(o) if isinstance(o, (list, tuple)) else -1 for o in outputs])
    if isinstance(preds, str):
        raise ValueError(preds)
    if len(preds) != len(targets):
        raise ValueError(
            f"expected one dict of detections per image, {len(targets)} in all, got {len(preds)}"
        )
    tp = fp = fn = 0
    for p, t in zip(preds, targets):
        for c in torch.unique(torch.cat([p["labels"].long(), t["labels"]])).tolist():
            d, m = p["labels"] == c, t["labels"] == c
            match = match_detections(
                p["boxes"][d].double(), p["scores"][d].double(), t["boxes"][m].double(), 0.5
            )
            hits = int((match >= 0).sum())
            tp, fp, fn = tp + hits, fp + int(d.sum()) - hits, fn + int(m.sum()) - hits
    return 2 * tp / max(2 * tp + fp + fn, 1)


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Anchors of a feature pyramid",
        49104,
        points=0.5,
        explain="The five levels have strides 8, 16, 32, 64, 128, so maps of 64², 32², 16², 8² and 4² "
        "positions: 4096 + 1024 + 256 + 64 + 16 = 5456 positions, times 9 anchors = 49,104.",
    ),
    Review(
        "r2",
        "IoU of two given boxes",
        0.142857,
        atol=0.001,
        rtol=0.0,
        points=0.5,
        explain="The intersection is [5, 5, 10, 10], area 25; the union is 100 + 100 - 25 = 175; "
        "IoU = 25 / 175 = 1/7 = 0.143 (not 25 / 200: the overlap is counted once).",
    ),
    Review(
        "r3",
        "GIoU of disjoint boxes",
        -0.2,
        atol=0.001,
        rtol=0.0,
        points=0.5,
        explain="IoU = 0; the union is 4 + 4 = 8; the enclosing box is [0, 0, 5, 2], area 10; "
        "GIoU = 0 - (10 - 8) / 10 = -0.2. The farther apart, the closer to -1.",
    ),
    Review(
        "r4",
        "AP of a ranked list by hand",
        0.5667,
        atol=0.002,
        rtol=0.0,
        points=0.5,
        explain="Precision after each detection: 1, 1/2, 2/3, 2/4, 3/5; recall steps by 1/4 at each true "
        "positive. The envelope at the three true positives is 1, 2/3 (the best precision at recall "
        ">= 0.5), 0.6; the fourth object is never found (0). AP = (1 + 0.667 + 0.6 + 0) / 4 = 0.567.",
    ),
    Review(
        "r5",
        "Decoding an offset",
        -15.0,
        atol=0.01,
        rtol=0.0,
        points=0.5,
        explain="Divide by the weights: (dx, dy, dw, dh) = (0.5, -1, 0, ln 2). The anchor has centre "
        "(10, 5) and size 20 x 10, so cy = 5 - 1 x 10 = -5 and h = 10 x e^(ln 2) = 20: "
        "y1 = -5 - 20 / 2 = -15 (boxes may leave the image until they are clipped).",
    ),
    Review(
        "r6",
        "Raising the NMS threshold",
        {"a", "b"},
        points=0.5,
        explain="A higher threshold suppresses only boxes that overlap more: (a) more duplicates survive, "
        "and (b) fewer neighbours that overlap a better box are deleted. (c) AP50 rises only while "
        "the neighbours saved outweigh the duplicates kept, then falls (the chapter's sweep); (d) "
        "fewer boxes are suppressed, so as many or more are kept.",
    ),
]

QUESTIONS = [
    Question(
        "q1",
        "IoU and GIoU, pairwise",
        ("box_iou", "generalized_box_iou"),
        iou_cases,
        forbid=("torchvision.ops", *COURSE),
        why="q1 asks for the overlap computed with tensor operations",
    ),
    Question(
        "q2",
        "Greedy and class-aware NMS",
        ("nms", "batched_nms"),
        nms_cases,
        forbid=("torchvision.ops", *COURSE),
        why="q2 asks for non-maximum suppression written yourself",
    ),
    Question(
        "q3",
        "Encoding and decoding box offsets",
        ("encode_boxes", "decode_boxes"),
        coder_cases,
        forbid=("torchvision.ops", "torchvision.models.detection._utils.BoxCoder", *COURSE),
        why="q3 asks for the box coder written with tensor operations",
    ),
    Question(
        "q4",
        "Average precision over many images",
        ("average_precision",),
        ap_cases,
        forbid=("torchvision.ops", "pycocotools", "sklearn", *COURSE),
        why="q4 asks for the matching and the area under the curve computed yourself",
    ),
    MakeItWork(
        "q5",
        "Make it work: post-process a dense detector",
        _held_out,
        metric=f1_at_50,
        steps=((0.73, 2), (0.67, 1)),
        function="postprocess",
        budget=30,
        batch_size=50,
        preview=_preview,
    ),
    *REVIEW,
]
