"""Chapter 03's make-it-work question and review block: the answers are right (recomputed here from
their definitions or with scikit-learn) and the usual mistakes are not, the data the grader holds is
not the data the exercise loads, and the steps give full points to the solution notebook's own
classifier (oversampling), partial points to the same training without it (plain cross-entropy) and
none to a constant answer."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
from sklearn.metrics import f1_score

from conftest import ROOT
from utils.grading import MakeItWork, Review, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks.losses_metrics import held_out_digits, imbalanced_digits

QSET = get_assignment("03_losses_metrics")
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / "03_losses_metrics.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def test_the_review_answers_are_what_their_definitions_give():
    assert math.isclose(REVIEWS["r1"].answer, -math.log(1 / 10), abs_tol=1e-5)
    constant = f1_score([0] * 90 + [1] * 10, [0] * 100, labels=[0, 1], average="macro", zero_division=0)
    assert math.isclose(REVIEWS["r2"].answer, constant, abs_tol=1e-4)
    precision, recall = 30 / 40, 30 / 50
    assert math.isclose(REVIEWS["r3"].answer, 2 * precision * recall / (precision + recall), abs_tol=1e-4)
    ranking, positives = [1, 0, 1, 1, 0], 4
    hits = [sum(ranking[: k + 1]) / (k + 1) for k, hit in enumerate(ranking) if hit]
    assert math.isclose(REVIEWS["r4"].answer, sum(hits) / positives, abs_tol=1e-4)
    matrix = torch.tensor([[5, 1, 0], [2, 6, 2], [0, 1, 3]])
    assert REVIEWS["r5"].answer == int(matrix[1].sum() - matrix[1, 1]) and isinstance(
        REVIEWS["r5"].answer, int
    )
    assert REVIEWS["r6"].answer == {"b", "c"}


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 1.0, "r2": 0.9, "r3": 0.675, "r4": 0.8056, "r5": 4.0, "r6": {"a", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and (REVIEWS[qid].explain in message or "expected an int" in message), message


def test_the_grader_scores_on_data_the_exercise_never_loads():
    x_fit, y_fit, x_val, y_val = imbalanced_digits()
    x_test, y_test = held_out_digits(123)
    assert x_test.shape == (360, 1, 8, 8) and torch.bincount(y_test).min() >= 35  # balanced
    assert torch.bincount(y_fit, minlength=10)[5:].tolist() == [3] * 5
    seen = {tuple(img.flatten().tolist()) for img in torch.cat([x_fit, x_val])}
    overlap = sum(tuple(img.flatten().tolist()) in seen for img in x_test)
    assert overlap <= 3, overlap  # different images (the digits data set holds a few exact duplicates)
    q = QSET.question("q5")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.metric == "macro_f1"


def _notebook_cells(*ids: str) -> list[str]:
    nb = nbformat.read(ROOT / "solutions" / "03_losses_metrics.ipynb", as_version=4)
    cells = {c.get("id"): c.source for c in nb.cells}
    return [cells[i] for i in ids]


def _trained_predict(train_source: str):
    """``predict`` after running the notebook's data cell, ``train_source`` and its predict cell."""
    data, predict = _notebook_cells("q5-data", "q5-predict")
    ns: dict = {"torch": torch, "SEED": 0}
    for source in (data, train_source, predict):
        exec(source, ns)
    return ns["predict"]


def _points(q: MakeItWork, predict) -> tuple[float, str]:
    batches, targets, n = q.prepare(0)
    outputs = [predict(b) for b in batches]
    points, text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    return points, text


@pytest.mark.slow
def test_the_steps_give_full_partial_and_zero_points():
    """The notebook's own training (oversampling) reaches the top step, the same training without the
    sampler (plain cross-entropy) the lower one, a constant answer none."""
    q = QSET.question("q5")
    (train,) = _notebook_cells("q5-train")
    assert "sampler=sampler" in train
    good = _trained_predict(train)
    plain = _trained_predict(
        train.replace("sampler=sampler", "shuffle=True, generator=torch.Generator().manual_seed(SEED)")
    )
    points = {name: _points(q, fn) for name, fn in {"good": good, "plain": plain}.items()}
    points["constant"] = _points(q, lambda images: torch.zeros(len(images), dtype=torch.int64))
    assert {name: p for name, (p, _) in points.items()} == {"good": 2, "plain": 1, "constant": 0}, points
