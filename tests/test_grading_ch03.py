"""Chapter 03's make-it-work question and review block: the answers are right (recomputed here from
their definitions or with scikit-learn), the data the grader holds is not the data the exercise
loads, and the targets separate plain cross-entropy from a classifier that handles the imbalance."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

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


def _train(x, y, *, oversample: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if oversample:
        counts = torch.bincount(y, minlength=10).double()
        loader = DataLoader(
            TensorDataset(x, y),
            batch_size=64,
            sampler=WeightedRandomSampler((1 / counts)[y], len(y), generator=generator),
        )
    else:
        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=generator)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_the_steps_separate_plain_training_from_a_classifier_that_handles_the_imbalance():
    q = QSET.question("q5")
    x_fit, y_fit, _, _ = imbalanced_digits()
    batches, targets, n = q.prepare(0)
    points = {}
    for oversample in (False, True):
        model = _train(x_fit, y_fit, oversample=oversample)
        with torch.no_grad():
            outputs = [model(b).argmax(dim=1) for b in batches]
        points[oversample], text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    assert points == {False: 1, True: 2}, text
