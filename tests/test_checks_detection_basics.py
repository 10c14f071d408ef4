"""The chapter 10 question set (10_detection_basics): the reference solutions of the solution notebook
and the course's own functions pass every case, the references equal pycocotools, the usual mistakes
(no clamp on the intersection, the inclusive-pixel convention, indices into the sorted order, NMS
across classes, no weights, no clamp, recall over the found objects, no envelope) fail with a message
that says what is wrong, the forbidden shortcuts score zero, and the make-it-work question scores on
scenes the exercise never loads, with steps that separate untuned from tuned post-processing."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

import utils.ops
from conftest import ROOT, functions_for, solution_namespace, watch_off
from utils.grading import MakeItWork, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks import detection_basics as D
from utils.grading.core import Question

ASSIGNMENT = "10_detection_basics"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def _namespace(*extra: str) -> dict:
    return solution_namespace(ASSIGNMENT, *extra)


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = _namespace()
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 8


def test_the_course_functions_pass_the_same_cases():
    course = {
        "box_iou": utils.ops.box_iou,
        "generalized_box_iou": utils.ops.generalized_box_iou,
        "nms": utils.ops.nms,
        "batched_nms": utils.ops.batched_nms,
        "encode_boxes": lambda boxes, anchors, weights: utils.ops.encode_boxes(boxes, anchors, weights),
        "decode_boxes": lambda offsets, anchors, weights, clamp: utils.ops.decode_boxes(
            offsets, anchors, weights, clamp
        ),
        "average_precision": D.reference_ap,
    }
    for q in IMPLEMENT:
        result = evaluate(watch_off(q), functions_for(course, q), seed=5)
        assert result.passed, result.line()


@pytest.mark.parametrize("seed", [0, 7])
def test_the_ap_references_equal_pycocotools(seed):
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for case in QSET.question("q4").cases(seed):
        if case.args["method"] != "101point":
            continue
        dets, targets, threshold = case.args["detections"], case.args["targets"], case.args["iou_threshold"]
        images, annotations, results = [], [], []
        for i, (d, t) in enumerate(zip(dets, targets)):
            images.append({"id": i, "width": 100, "height": 100})
            for b in t["boxes"].double().tolist():
                w, h = b[2] - b[0], b[3] - b[1]
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": i, "category_id": 1, "bbox": [b[0], b[1], w, h]}
                )
                annotations[-1].update(area=w * h, iscrowd=0)
            for b, s in zip(d["boxes"].double().tolist(), d["scores"].tolist()):
                results.append(
                    {
                        "image_id": i,
                        "category_id": 1,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": s,
                    }
                )
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
            gt.createIndex()
            evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
            evaluation.params.iouThrs = np.array([threshold])
            evaluation.evaluate()
            evaluation.accumulate()
        reference = float(evaluation.eval["precision"][0, :, 0, 0, -1].mean())
        assert case.expected == pytest.approx(reference, abs=1e-9), case.name


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 9
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    iou = [c for c in cases["q1"] if c.function == "box_iou"]
    assert any(c.args["boxes1"].shape[0] == 0 for c in iou)
    assert any(c.args["boxes1"].dtype == torch.float64 for c in iou)
    assert any((c.expected == 0).all() and c.expected.numel() > 0 for c in iou)  # disjoint
    assert any(
        torch.allclose(c.expected.diagonal(), torch.ones(5)) for c in iou if c.expected.shape == (5, 5)
    )
    flat = next(c for c in iou if "zero-area" in c.name)
    boxes1 = flat.args["boxes1"]
    assert ((boxes1[:, 2] == boxes1[:, 0]) | (boxes1[:, 3] == boxes1[:, 1])).all()
    giou = [c for c in cases["q1"] if c.function == "generalized_box_iou"]
    assert any((c.expected < 0).all() and c.expected.numel() > 0 for c in giou)
    nms = [c for c in cases["q2"] if c.function == "nms"]
    assert {0.0, 1.0} <= {c.args["iou_threshold"] for c in nms}
    assert any(len(c.expected) == 0 for c in nms) and any(len(c.expected) == 1 for c in nms)
    assert all(c.expected.dtype == torch.int64 and c.atol == c.rtol == 0 for c in cases["q2"])
    batched = [c for c in cases["q2"] if c.function == "batched_nms"]
    assert any(c.args["idxs"].max() > 10 for c in batched if len(c.args["idxs"]))
    coder = {c.function for c in cases["q3"]}
    assert coder == {"encode_boxes", "decode_boxes"}
    assert any(c.args["clamp"] == 1.0 for c in cases["q3"] if c.function == "decode_boxes")
    assert {c.args["method"] for c in cases["q4"]} == {"all_points", "101point"}
    assert {c.args["iou_threshold"] for c in cases["q4"]} == {0.5, 0.75}
    for c in cases["q4"]:  # an image without detections and one without objects, no tied scores
        assert len(c.args["detections"][0]["boxes"]) == 0 and len(c.args["targets"][1]["boxes"]) == 0
        scores = torch.cat([d["scores"] for d in c.args["detections"]])
        assert len(scores.unique()) == len(scores)
    # fresh inputs: two seeds differ, one seed twice is the same
    q1 = QSET.question("q1")
    assert not torch.equal(q1.cases(1)[0].args["boxes1"], q1.cases(2)[0].args["boxes1"])
    assert torch.equal(q1.cases(1)[0].args["boxes1"], q1.cases(1)[0].args["boxes1"])


BROKEN = {
    "IoU without clamping the intersection": (
        "q1",
        """
def box_iou(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    wh = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:]) - torch.maximum(
        boxes1[:, None, :2], boxes2[None, :, :2]
    )
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)
""",
        ["IoU, N=6 by M=9", "values off", "clamp(min=0)"],
    ),
    "IoU with the inclusive-pixel convention (+1)": (
        "q1",
        """
def box_iou(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    wh = (torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
          - torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2]) + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)
""",
        ["IoU, N=6 by M=9", "values off"],
    ),
    "GIoU as IoU": (
        "q1",
        """
def generalized_box_iou(boxes1, boxes2):
    return box_iou(boxes1, boxes2)
""",
        ["GIoU", "values off", "enclosing"],
    ),
    "NMS returning positions in the sorted order": (
        "q2",
        """
def nms(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order]
    alive = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if alive[i]:
            alive[i + 1:] &= box_iou(boxes[i][None], boxes[i + 1:])[0] <= iou_threshold
    return torch.where(alive)[0]
""",
        ["nms, 6 clusters of 5 boxes", "indices into the original boxes"],
    ),
    "class-agnostic batched NMS": (
        "q2",
        """
def batched_nms(boxes, scores, idxs, iou_threshold):
    return nms(boxes, scores, iou_threshold)
""",
        ["batched_nms, 3 classes in overlapping clusters", "never suppress each other"],
    ),
    "batched NMS not sorted by score": (
        "q2",
        """
def batched_nms(boxes, scores, idxs, iou_threshold):
    keep = [torch.where(idxs == c)[0][nms(boxes[idxs == c], scores[idxs == c], iou_threshold)]
            for c in torch.unique(idxs)]
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64)
""",
        ["batched_nms, 3 classes", "sorted by decreasing score"],
    ),
    "encoding without the weights": (
        "q3",
        """
def encode_boxes(boxes, anchors, weights):
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x, y = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    return torch.stack([(x - xa) / wa, (y - ya) / ha, torch.log(w / wa), torch.log(h / ha)], 1)
""",
        ["encode_boxes, weights (10, 10, 5, 5)", "values off"],
    ),
    "decoding without the clamp": (
        "q3",
        """
def decode_boxes(offsets, anchors, weights, clamp):
    wx, wy, ww, wh = weights
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    x, y = xa + offsets[:, 0] / wx * wa, ya + offsets[:, 1] / wy * ha
    w, h = torch.exp(offsets[:, 2] / ww) * wa, torch.exp(offsets[:, 3] / wh) * ha
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)
""",
        ["decode_boxes, width and height offsets far above the clamp", "BEFORE exp"],
    ),
    "recall over the objects found": (
        "q4",
        """
_right = average_precision
def average_precision(detections, targets, iou_threshold=0.5, method="all_points"):
    found = [{"boxes": t["boxes"][box_iou(t["boxes"], d["boxes"]).amax(1) >= iou_threshold]
              if len(d["boxes"]) else t["boxes"][:0]} for d, t in zip(detections, targets)]
    return _right(detections, found, iou_threshold, method)
""",
        ["all_points, 12 images, IoU 0.5", "values off", "found or not"],
    ),
    "AP without the envelope (the raw precision)": (
        "q4",
        """
def average_precision(detections, targets, iou_threshold=0.5, method="all_points"):
    scores = torch.cat([d["scores"] for d in detections])
    image = torch.cat([torch.full((len(d["scores"]),), i) for i, d in enumerate(detections)])
    index = torch.cat([torch.arange(len(d["scores"])) for d in detections])
    taken = [torch.zeros(len(t["boxes"]), dtype=torch.bool) for t in targets]
    hits = []
    for k in torch.argsort(scores, descending=True).tolist():
        i = int(image[k])
        gt = targets[i]["boxes"]
        if len(gt) == 0:
            hits.append(False)
            continue
        iou = box_iou(detections[i]["boxes"][index[k]][None], gt)[0]
        iou[taken[i]] = -1
        j = int(iou.argmax())
        hits.append(bool(iou[j] >= iou_threshold))
        taken[i][j] |= hits[-1]
    tp = torch.cumsum(torch.tensor(hits, dtype=torch.float64), 0)
    precision = tp / torch.arange(1, len(hits) + 1)
    recall = tp / sum(len(t["boxes"]) for t in targets)
    if method == "101point":
        at = torch.searchsorted(recall, torch.linspace(0, 1, 101, dtype=torch.float64))
        return torch.cat([precision, torch.zeros(1)])[at.clamp(max=len(precision))].mean().item()
    return (torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64)) * precision).sum().item()
""",
        ["values off", "envelope"],
    ),
    "not implemented": (
        "q4",
        """
def average_precision(detections, targets, iou_threshold=0.5, method="all_points"):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    q = QSET.question(qid)
    for seed in (0, 1):
        result = evaluate(q, functions_for(_namespace(source), q), seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


SHORTCUTS = {
    "q1": """
def box_iou(boxes1, boxes2):
    return torchvision.ops.box_iou(boxes1, boxes2)
def generalized_box_iou(boxes1, boxes2):
    return torchvision.ops.generalized_box_iou(boxes1, boxes2)
""",
    "q2": """
def nms(boxes, scores, iou_threshold):
    return torchvision.ops.nms(boxes, scores, iou_threshold)
def batched_nms(boxes, scores, idxs, iou_threshold):
    import utils.ops
    return utils.ops.batched_nms(boxes, scores, idxs, iou_threshold)
""",
    "q3": """
from torchvision.models.detection._utils import BoxCoder
def encode_boxes(boxes, anchors, weights):
    return BoxCoder(weights).encode_single(boxes, anchors)
def decode_boxes(offsets, anchors, weights, clamp):
    return BoxCoder(weights, bbox_xform_clip=clamp).decode_single(offsets, anchors)
""",
    "q4": """
def average_precision(detections, targets, iou_threshold=0.5, method="all_points"):
    from utils.grading.checks.detection_basics import reference_ap
    return reference_ap(detections, targets, iou_threshold, method)
""",
}


@pytest.mark.parametrize("qid", list(SHORTCUTS))
def test_a_shortcut_scores_zero_with_the_forbidden_call_named(qid):
    q = QSET.question(qid)
    ns = _namespace("import torchvision", SHORTCUTS[qid])
    result = evaluate(q, functions_for(ns, q), seed=0, assignment=ASSIGNMENT)
    assert result.score == 0 and not result.passed
    assert result.first_failure.forbidden, result.feedback()
    assert "forbidden call in case" in result.feedback()


# --------------------------------------------------------------------------- review questions


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def test_the_review_answers_are_what_their_definitions_give():
    generator = utils.ops.AnchorGenerator(sizes=((32, 64, 128),) * 5, aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    maps = [torch.zeros(1, 1, 512 // s, 512 // s) for s in (8, 16, 32, 64, 128)]
    anchors = generator(torch.zeros(1, 3, 512, 512), maps)
    assert REVIEWS["r1"].answer == len(anchors[0]) and isinstance(REVIEWS["r1"].answer, int)
    a, b = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]])
    assert math.isclose(REVIEWS["r2"].answer, torchvision.ops.box_iou(a, b).item(), abs_tol=1e-5)
    a, b = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[3.0, 0, 5, 2]])
    assert math.isclose(REVIEWS["r3"].answer, torchvision.ops.generalized_box_iou(a, b).item(), abs_tol=1e-6)
    hits, objects = torch.tensor([1.0, 0, 1, 0, 1]), 4
    tp = hits.cumsum(0)
    ap = utils.metrics.detection.voc_ap(tp / objects, tp / torch.arange(1, 6))
    assert math.isclose(REVIEWS["r4"].answer, ap, abs_tol=1e-4)
    decoded = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(
        torch.tensor([[5.0, -10.0, 0.0, 5 * math.log(2)]]), torch.tensor([[0.0, 0.0, 20.0, 10.0]])
    )
    assert math.isclose(REVIEWS["r5"].answer, decoded[0, 1].item(), abs_tol=1e-4)
    assert REVIEWS["r6"].answer == {"a", "b"}


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    # 9 anchors on the finest map only; overlap counted twice; |IoU| of disjoint boxes; the mean of the
    # precisions at the hits; the offsets not divided by the weights; NMS that deletes more when raised
    mistakes = {"r1": 36864, "r2": 0.125, "r3": 0.0, "r4": 0.7556, "r5": -105.0, "r6": {"a", "b", "c"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message


# --------------------------------------------------------------------------- make it work


def _post(raw, threshold, min_score, class_aware=True):
    out = []
    for d in raw:
        above = d["scores"] >= min_score
        boxes, scores, labels = d["boxes"][above], d["scores"][above], d["labels"][above]
        if class_aware:
            keep = torchvision.ops.batched_nms(boxes, scores, labels, threshold)
        else:
            keep = torchvision.ops.nms(boxes, scores, threshold)
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return out


def test_f1_at_50_counts_matches_per_class_and_refuses_bad_output():
    target = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), "labels": torch.tensor([1, 2])}]
    preds = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 10, 10], [20.0, 20, 30, 30], [50.0, 50, 60, 60]]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
        "labels": torch.tensor([1, 1, 1, 2]),  # a hit, a duplicate, the wrong class, nothing there
    }
    # TP 1, FP 3, FN 1: F1 = 2 / (2 + 3 + 1)
    assert D.f1_at_50([[preds]], target) == pytest.approx(2 / 6)
    assert D.f1_at_50([[{k: v[:1] for k, v in preds.items()}]], target) == pytest.approx(2 / 3)
    q = QSET.question("q5")
    batches = [[{"boxes": torch.zeros(0, 4)}]]
    points, text, _ = verdict(q, Prediction(outputs=[[{"boxes": torch.zeros(0, 4)}]]), batches, target, 1)
    assert points == 0 and "'boxes', 'scores' and 'labels'" in text


def test_the_validation_scenes_are_not_the_held_out_ones():
    q = QSET.question("q5")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.function == "postprocess"
    raw, targets = D.validation_detections()
    assert len(raw) == len(targets) == D.N_PREVIEW
    assert all(set(d) == {"boxes", "scores", "labels"} for d in raw)  # no trace of the ground truth
    again, _ = D.validation_detections()
    assert torch.equal(again[0]["boxes"], raw[0]["boxes"]) and again[0]["boxes"] is not raw[0]["boxes"]
    held = D.crowded_scenes(5, seed=1_000)  # the grader's scenes for seed 0 start like this
    seen = {tuple(t["boxes"].flatten().tolist()) for t in targets}
    assert not any(tuple(t["boxes"].flatten().tolist()) in seen for t in held)


@pytest.mark.slow
def test_the_steps_separate_untuned_from_tuned_post_processing():
    q = QSET.question("q5")
    batches, targets, n = q.prepare(0)
    assert n == D.N_HELD_OUT
    points = {}
    for name, settings in {
        "raw output": (1.01, 0.0),
        "class-aware NMS 0.5, score 0.5": (0.5, 0.5),
        "tuned: class-aware NMS 0.4, score 0.8": (0.4, 0.8),
    }.items():
        outputs = [_post(batch, *settings) for batch in batches]
        points[name], text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    assert list(points.values()) == [0, 1, 2], points
