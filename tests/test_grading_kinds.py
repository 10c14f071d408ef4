"""The kinds of question (review, make it work) and what ``compare`` accepts beyond tensors, in process:
review answers and their int-vs-float rule, make-it-work metrics (against scikit-learn) and steps,
dicts of tensors and order-free box sets, the generator's answer lines, and the inline ``check``."""

from __future__ import annotations

import math
import sys
import types

import nbformat
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from utils.grading import BoxSet, Case, MakeItWork, Review, check, compare, register, unregister
from utils.grading.challenge import Prediction, run_inline, score_predictions, verdict
from utils.grading.core import CallOutcome, judge
from utils.grading.generate import MarkerError, _blank_answers, answer_lines, generate_exercise
from utils.grading.kernel import decode
from utils.grading.runner import safe

# --------------------------------------------------------------------------- compare: dicts, boxes, ints


def test_compare_dicts_of_tensors():
    expected = {"boxes": torch.ones(2, 4), "labels": torch.tensor([1, 2])}
    assert compare({"labels": torch.tensor([1, 2]), "boxes": torch.ones(2, 4)}, expected) is None
    missing = "expected the keys ['boxes', 'labels']: missing ['labels']"
    assert compare({"boxes": torch.ones(2, 4)}, expected) == missing
    extra = {**expected, "scores": torch.ones(2)}
    assert compare(extra, expected) == "expected the keys ['boxes', 'labels']: unexpected ['scores']"
    message = compare({"boxes": torch.ones(2, 4) * 2, "labels": torch.tensor([1, 2])}, expected, atol=0.1)
    assert message.startswith("key 'boxes': values off: max abs error 1")
    not_a_dict = "expected a dict with keys ['boxes', 'labels'], got torch.Tensor"
    assert compare(torch.ones(2), expected) == not_a_dict


def _detections(order):
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 40, 50], [5, 5, 8, 9]], dtype=torch.float32)
    labels, scores = torch.tensor([1, 2, 1]), torch.tensor([0.9, 0.8, 0.3])
    return {"boxes": boxes[order], "labels": labels[order], "scores": scores[order]}


def test_boxset_ignores_order_and_checks_labels_and_scores():
    want = _detections([0, 1, 2])
    expected = BoxSet(want["boxes"], want["labels"], want["scores"], min_iou=0.95, score_atol=1e-3)
    for order in ([2, 0, 1], [1, 2, 0], [0, 1, 2]):
        assert compare(_detections(order), expected) is None
    shifted = _detections([2, 0, 1])
    shifted["boxes"] = shifted["boxes"] + torch.tensor([0.0, 0.0, 0.0, 0.01])  # IoU barely changes
    assert compare(shifted, expected) is None
    moved = _detections([0, 1, 2])
    moved["boxes"][1] += 5  # IoU with the expected box far below 0.95
    message = compare(moved, expected)
    assert message.startswith(
        "1 of 3 expected boxes have no match with IoU >= 0.95, e.g. [20, 20, 40, 50] (label 2)"
    )
    relabelled = _detections([0, 1, 2])
    relabelled["labels"][1] = 3
    assert "no returned box has that label" in compare(relabelled, expected)
    rescored = _detections([1, 0, 2])
    rescored["scores"][0] = 0.5
    message = compare(rescored, expected)
    assert message.startswith("the box matched to [20, 20, 40, 50] has score 0.5, expected 0.8")
    assert compare({k: v[:2] for k, v in want.items()}, expected) == "expected 3 boxes, got 2"
    assert compare({"boxes": want["boxes"]}, expected) == "expected 'labels' as a torch.Tensor, got none"


def test_boxset_of_boxes_only_and_empty_sets():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]])
    assert compare(boxes.flip(0), BoxSet(boxes)) is None  # a Tensor[K, 4] does when only boxes are expected
    assert compare(torch.zeros(0, 4), BoxSet(torch.zeros(0, 4))) is None
    assert compare({"boxes": torch.zeros(0, 4)}, BoxSet(boxes)) == "expected 2 boxes, got 0"
    # a list of BoxSets: one per image
    assert compare([boxes, boxes[:1]], [BoxSet(boxes), BoxSet(boxes[:1])]) is None
    message = compare([boxes, boxes], [BoxSet(boxes), BoxSet(boxes[:1])])
    assert message.startswith("output[1]: expected 1 boxes, got 2")
    with pytest.raises(ValueError, match="labels has 1 entries for 2 boxes"):
        BoxSet(boxes, labels=torch.tensor([1]))


def test_an_int_is_required_where_an_int_is_expected():
    assert compare(27, 27) is None
    assert compare(27.0, 27) == "expected an int, got float 27.0 (return an int, e.g. with // or int(...))"
    assert compare(True, 1).startswith("expected an int, got bool")
    assert compare(torch.tensor(27), 27).startswith("expected an int, got torch.Tensor")
    assert compare(28, 27) == "values off: got 28, expected 27 (exact match required)"
    assert compare(27, 27.0) is None  # a float answer may be given as an int


def test_requires_grad_of_returned_and_input_tensors():
    x = torch.randn(3)
    attached = x.clone().requires_grad_() * 2
    assert compare(attached, (x * 2)).startswith("the returned tensor still requires grad")
    assert compare(attached.detach(), x * 2) is None
    case = Case("c", "f", {"x": x}, x * 2, atol=1e-6)
    flipped = CallOutcome(value=x * 2, grad_flags={"x": True})
    assert "switched requires_grad on on its argument `x`" in judge(case, flipped).message
    assert judge(case, CallOutcome(value=x * 2, grad_flags={"x": False})).passed


def test_measure_runs_in_the_grading_process():
    values = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    case = Case(
        "std", "f", {}, torch.tensor(1.0, dtype=torch.float64), rtol=0.02, measure=lambda v: v.double().std()
    )
    assert judge(case, CallOutcome(value=values)).passed
    assert "values off" in judge(case, CallOutcome(value=values * 2)).message
    broken = judge(case, CallOutcome(value="not a tensor"))
    assert broken.message.startswith("the returned value could not be measured (AttributeError")


def test_values_travel_back_from_the_kernel_intact():
    leaf = torch.ones(2, requires_grad=True)
    value = {"a": {1, 2}, "b": ..., "c": (np.int64(3), np.float32(0.5)), "d": [leaf * 2], "e": object()}
    back = decode(safe(value))
    assert back["a"] == {1, 2} and back["b"] is Ellipsis and back["c"] == (3, 0.5)
    assert type(back["c"][0]) is int and back["d"][0].requires_grad and back["e"].type_name == "object"
    assert decode(safe({"__grader_opaque__": 1})) == {"__grader_opaque__": 1}  # a learner's dict stays a dict


# --------------------------------------------------------------------------- review questions

INT = Review("r1", "Receptive field", 7, explain="r = 1 + 2 + 2 + 2 * 2 = 7")
FLOAT = Review("r2", "Macro-F1", 0.4737, atol=0.005, rtol=0.0, explain="(0.947 + 0) / 2")
CHOICE = Review("r3", "Two actions", {"b", "d"}, explain="b and d regularise")
LETTER = Review("r4", "One action", "c", explain="only c")


@pytest.mark.parametrize(
    "q, given, right, fragment",
    [
        (INT, 7, True, "right"),
        (INT, 7.0, False, "expected an int, got float 7.0; this question asks for a whole number"),
        (INT, 9, False, "not right (9). r = 1 + 2 + 2 + 2 * 2 = 7"),
        (INT, True, False, "expected an int, got bool"),
        (INT, ..., False, "not answered yet: replace ... in answers['r1'] with an int"),
        (FLOAT, 0.47, True, "right"),
        (FLOAT, 0.48, False, "not right (0.48). (0.947 + 0) / 2"),
        (FLOAT, "0.47", False, "expected a number, got str"),
        (FLOAT, float("nan"), False, "expected a finite number"),
        (CHOICE, {"B", "d"}, True, "right"),
        (CHOICE, ["d", "b"], True, "right"),
        (CHOICE, {"b"}, False, "not right ({'b'}). b and d regularise"),
        (CHOICE, {"b", "e"}, False, "'e' is not one of the choices a, b, c, d"),
        (CHOICE, "bd", False, "'bd' is not one of the choices"),
        (LETTER, "c", True, "right"),
        (LETTER, {"c"}, True, "right"),
        (LETTER, {"c", "d"}, False, "expected one letter, got 2"),
    ],
)
def test_review_answers(q, given, right, fragment):
    ok, message = q.verdict({q.id: given})
    assert ok is right and fragment in message


def test_review_without_answers_and_bad_questions():
    message = "no dict named `answers` in the notebook (did the cell that creates it run?)"
    assert INT.verdict(None) == (False, message)
    assert INT.verdict([7])[1] == "`answers` must be a dict of answers by question id, got list"
    assert INT.verdict({"r2": 7})[1] == "no answer: set answers['r1'] to an int"
    with pytest.raises(ValueError, match="explain must say"):
        Review("r9", "x", 1, explain=" ")
    with pytest.raises(ValueError, match="a letter or a set of letters"):
        Review("r9", "x", {"ab"}, explain="e")
    with pytest.raises(TypeError, match="int, a float, a bool or letters"):
        Review("r9", "x", [1, 2], explain="e")


# --------------------------------------------------------------------------- make it work


def _labels(n: int, c: int, seed: int, correct: float):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < correct, y, torch.randint(0, c, (n,), generator=g))
    return pred, y


def _question(metric="accuracy", **kw):
    return MakeItWork(
        "q9",
        "Test",
        lambda seed: (torch.zeros(10, 3), torch.zeros(10, dtype=torch.long)),
        metric=metric,
        steps=((0.9, 2), (0.6, 1)),
        batch_size=4,
        **kw,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_scikit_learn(seed):
    pred, y = _labels(200, 5, seed, 0.7)
    batches = [torch.zeros(len(chunk)) for chunk in y.split(64)]
    outputs = list(pred.split(64))
    accuracy = score_predictions(_question(), outputs, batches, y)
    assert math.isclose(accuracy, accuracy_score(y, pred), abs_tol=1e-12)
    expected = f1_score(y, pred, labels=range(5), average="macro", zero_division=0)
    f1 = score_predictions(_question("macro_f1", num_classes=5), outputs, batches, y)
    assert math.isclose(f1, expected, abs_tol=1e-12)
    # scores (B, C) count by their argmax
    scores = [torch.nn.functional.one_hot(p, 5).float() + 0.01 * torch.rand(len(p), 5) for p in outputs]
    from_scores = score_predictions(_question("macro_f1", num_classes=5), scores, batches, y)
    assert math.isclose(from_scores, expected, abs_tol=1e-12)


def test_miou_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (6, 8, 8), generator=g)
    noise = torch.randint(0, 4, (6, 8, 8), generator=g)
    pred = torch.where(torch.rand(6, 8, 8, generator=g) < 0.6, target, noise)
    expected = jaccard_score(target.reshape(-1), pred.reshape(-1), labels=range(4), average="macro")
    batches = [torch.zeros(3, 1, 8, 8), torch.zeros(3, 1, 8, 8)]
    got = score_predictions(_question("miou", num_classes=4), list(pred.split(3)), batches, target)
    assert math.isclose(got, expected, abs_tol=1e-12)


def test_map_uses_the_course_detection_metric(monkeypatch):
    """utils.metrics.detection (issue 8) may not be merged yet: a stand-in with its contract's name."""
    calls = []
    stand_in = types.ModuleType("utils.metrics.detection")
    stand_in.coco_map = lambda preds, targets: calls.append((preds, targets)) or {"map": 0.42, "map_50": 0.7}
    monkeypatch.setitem(sys.modules, "utils.metrics.detection", stand_in)
    det = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}
    batches = [[torch.zeros(3, 8, 8)] * 2]
    assert score_predictions(_question("map"), [[det, det]], batches, ["t1", "t2"]) == 0.42
    assert score_predictions(_question("map_50"), [[det, det]], batches, ["t1", "t2"]) == 0.7
    assert len(calls[0][0]) == 2 and calls[0][1] == ["t1", "t2"]
    message = score_predictions(_question("map"), [[det]], batches, [])
    assert message.startswith("batch 0: expected a list of 2 dicts")


def test_make_it_work_steps_and_messages():
    q = _question()
    assert (q.points, q.award(0.95), q.award(0.9), q.award(0.7), q.award(0.59)) == (2, 2, 2, 1, 0)
    y = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0, 1, 1])
    batches = [torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(2, 3)]
    good = Prediction(outputs=list(y.split(4)), seconds=0.5)
    points, text, forbidden = verdict(q, good, batches, y, 10)
    assert points == 2 and not forbidden
    assert text == (
        "accuracy 1.0000 on 10 held-out inputs (2/2 points; steps: 2 at 0.9, 1 at 0.6); "
        "predict took 0.5 s of its 60 s budget"
    )
    half = Prediction(outputs=[1 - y[:4], y[4:8], y[8:]])
    assert verdict(q, half, batches, y, 10)[0] == 1
    short = verdict(q, Prediction(outputs=[y[:4], y[4:8]]), batches, y, 10)
    assert short[1] == "expected outputs for 3 batches, got 2"
    wrong_shape = Prediction(outputs=[y[:3], y[4:8], y[8:]])
    assert verdict(q, wrong_shape, batches, y, 10)[1].startswith("batch 0: expected labels of shape (4, ...)")
    late = Prediction(problem="predict ran past its time budget and was interrupted")
    assert verdict(q, late, batches, y, 10)[1].endswith("(the budget is 60 s for all 10 held-out inputs)")
    cheat = Prediction(violation="calls torch.nn.functional.conv2d, which this question forbids")
    assert verdict(q, cheat, batches, y, 10) == (0.0, cheat.violation, True)
    with pytest.raises(ValueError, match="metric must be one of"):
        _question("auc")


def test_make_it_work_inline_check_uses_the_preview(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    q = MakeItWork(
        "q1",
        "Sign",
        lambda seed: (x, y),
        metric="accuracy",
        steps=((0.95, 2), (0.5, 1)),
        batch_size=16,
        preview=lambda seed: (x, y),
        forbid=("torch.sign",),
    )
    register("96_challenge", [q])
    try:
        result = check("q1", lambda images: (images[:, 0] > 0).long(), assignment="96_challenge")
        assert result.passed and result.score == 2
        out = capsys.readouterr().out
        assert "accuracy 1.0000 on 50 preview inputs (the grader uses held-out ones)" in out
        result = check("q1", lambda images: (torch.sign(images[:, 0]) > 0).long(), assignment="96_challenge")
        assert result.score == 0 and "calls torch.sign, which this question forbids" in result.feedback()
        points, text, _ = run_inline(q, lambda images: torch.zeros(len(images), dtype=torch.long), 0)
        assert points == 1 and text.startswith("accuracy 0.")
    finally:
        unregister("96_challenge")


def test_review_inline_check_tells_the_form_only(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    register("95_review", [INT, CHOICE])
    try:
        ns = {"check": check, "answers": {"r1": 9, "r3": "bd"}}
        exec('a = check("r1", assignment="95_review"); b = check("r3", assignment="95_review")', ns)
        out = capsys.readouterr().out
        # 9 is wrong, which only the grader says
        assert "answer recorded (an int); the grader says whether it is right" in out
        assert ns["a"].score == 0 and ns["b"].status == "error" and "'bd' is not one of the choices" in out
        exec('c = check("r1", assignment="95_review")', {"check": check})
        assert "no dict named `answers` yet" in capsys.readouterr().out
    finally:
        unregister("95_review")


# --------------------------------------------------------------------------- the generator's answer lines


def test_answer_lines_become_ellipses():
    source = (
        'answers = {}\nanswers["r1"] = 7  # ANSWER (an int)\n'
        'answers["r2"] = {"a", "c"}  # ANSWER: letters\n'
        "r3 = 0.5   # ANSWER\nx = 1  # answer, not a marker\n"
    )
    assert answer_lines(source) == [2, 3, 4]
    assert _blank_answers(source, notebook="n", cell=0) == (
        'answers = {}\nanswers["r1"] = ...  # ANSWER (an int)\nanswers["r2"] = ...  # ANSWER: letters\n'
        "r3 = ...   # ANSWER\nx = 1  # answer, not a marker\n"
    )
    with pytest.raises(MarkerError, match="an answer line .* inside a solution region"):
        _blank_answers("# BEGIN SOLUTION\nr1 = 7  # ANSWER\n# END SOLUTION\n", notebook="n", cell=3)
    cell = nbformat.v4.new_code_cell('answers = {"r1": 1}\nanswers["r1"] = 7  # ANSWER')
    exercise = generate_exercise(nbformat.v4.new_notebook(cells=[cell]), name="99_x.ipynb")
    assert exercise.cells[0].source == 'answers = {"r1": 1}\nanswers["r1"] = ...  # ANSWER'
