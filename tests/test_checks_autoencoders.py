"""The 13_autoencoders questions: the reference solutions (from the solution notebook) pass every case,
the course's own versions pass where they answer the same question, plausible wrong answers and
forbidden shortcuts fail with a message that says what is wrong, the make-it-work question scores a
denoiser by PSNR on data the exercise never loads, and the review answers are what their definitions give."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import functions_for, solution_namespace, watch_off
from sklearn.metrics import roc_auc_score

from utils.grading import MakeItWork, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks import autoencoders as checks

QSET = get_assignment("13_autoencoders")


def namespace(*extra: str) -> dict:
    return solution_namespace("13_autoencoders", *extra)


def run(qid: str, *extra: str, seed: int = 3, forbid: bool = True):
    q = QSET.question(qid)
    return evaluate(q if forbid else watch_off(q), functions_for(namespace(*extra), q), seed=seed)


def test_question_set_shape_and_points():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 10
    # issue 15: at least half of the points for what the lesson did not print (only q2's formula is in it)
    assert QSET.max_score - QSET.question("q2").points >= QSET.max_score / 2


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = namespace()
    for qid in ("q1", "q2", "q3", "q4"):
        q = QSET.question(qid)
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 5


def test_the_course_versions_pass_where_they_answer_the_same_question():
    from utils.models.generative import gaussian_kl, quantize, reparameterize

    assert evaluate(watch_off(QSET.question("q2")), {"reparameterize": reparameterize}, seed=2).passed
    assert evaluate(watch_off(QSET.question("q4")), {"vector_quantize": quantize}, seed=2).passed
    # the chapter's KL has the standard prior only: it answers the q1 cases whose prior is N(0, I)
    standard = [c for c in QSET.question("q1").cases(2) if not c.args["prior_mu"].any()]
    assert standard
    for c in standard:
        torch.testing.assert_close(
            gaussian_kl(c.args["mu"], c.args["logvar"]), c.expected, rtol=1e-4, atol=1e-4
        )


def test_cases_cover_the_edge_cases():
    q1 = QSET.question("q1").cases(5)
    assert any(c.args["mu"].dim() == 4 for c in q1) and any(len(c.args["mu"]) == 1 for c in q1)
    assert any(torch.equal(c.expected, torch.zeros_like(c.expected)) for c in q1)  # identical distributions
    assert any(c.args["mu"].dtype == torch.float64 for c in q1)
    q2 = QSET.question("q2").cases(5)
    assert any(not c.args["eps"].any() for c in q2) and any(c.args["logvar"].min() <= -30 for c in q2)
    q3 = QSET.question("q3").cases(5)
    assert {0.0, 1.0, 4.0} <= {c.args["beta"] for c in q3}
    saturated = [c for c in q3 if ((c.args["x_hat"] == 0) | (c.args["x_hat"] == 1)).any()]
    assert saturated and all(torch.isfinite(c.expected) for c in q3)
    q4 = QSET.question("q4").cases(5)
    assert {c.args["z_e"].dim() for c in q4} == {2, 4} and any(len(c.args["codebook"]) == 1 for c in q4)
    # the codes-of-different-norms case really separates the nearest code from the largest dot product
    spread = next(c for c in q4 if "norms" in c.name)
    flat = spread.args["z_e"].movedim(1, -1).reshape(-1, spread.args["z_e"].shape[1])
    by_dot = (flat @ spread.args["codebook"].T).argmax(1)
    assert (by_dot != spread.expected[1].reshape(-1)).any()


WRONG = {
    "q1: the standard-normal prior only (the chapter's formula)": (
        "q1",
        """
        def gaussian_kl(mu, logvar, prior_mu, prior_logvar):
            return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
        """,
    ),
    "q1: the mean over the dimensions instead of the sum": (
        "q1",
        """
        def gaussian_kl(mu, logvar, prior_mu, prior_logvar):
            d = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu) ** 2) / prior_logvar.exp() - 1)
            return d.flatten(1).mean(1)
        """,
    ),
    "q1: the KL the wrong way round": (
        "q1",
        """
        def gaussian_kl(mu, logvar, prior_mu, prior_logvar):
            d = 0.5 * (logvar - prior_logvar + (prior_logvar.exp() + (mu - prior_mu) ** 2) / logvar.exp() - 1)
            return d.flatten(1).sum(1)
        """,
    ),
    "q2: exp(logvar) as the standard deviation": (
        "q2",
        """
        def reparameterize(mu, logvar, eps):
            return mu + torch.exp(logvar) * eps
        """,
    ),
    "q2: a detached standard deviation (no gradient to logvar)": (
        "q2",
        """
        def reparameterize(mu, logvar, eps):
            return mu + torch.exp(0.5 * logvar).detach() * eps
        """,
    ),
    "q3: BCE averaged over the pixels": (
        "q3",
        """
        def vae_loss(x, x_hat, mu, logvar, beta):
            bce = -(x * torch.log(x_hat).clamp(min=-100) + (1 - x) * torch.log(1 - x_hat).clamp(min=-100))
            z = torch.zeros_like(mu)
            return bce.flatten(1).mean(1).mean() + beta * gaussian_kl(mu, logvar, z, z).mean()
        """,
    ),
    "q3: no clamp on the logs": (
        "q3",
        """
        def vae_loss(x, x_hat, mu, logvar, beta):
            bce = -(x * torch.log(x_hat) + (1 - x) * torch.log(1 - x_hat)).flatten(1).sum(1)
            z = torch.zeros_like(mu)
            return (bce + beta * gaussian_kl(mu, logvar, z, z)).mean()
        """,
    ),
    "q3: beta ignored": (
        "q3",
        """
        def vae_loss(x, x_hat, mu, logvar, beta):
            bce = -(x * torch.log(x_hat).clamp(min=-100) + (1 - x) * torch.log(1 - x_hat).clamp(min=-100))
            z = torch.zeros_like(mu)
            return (bce.flatten(1).sum(1) + gaussian_kl(mu, logvar, z, z)).mean()
        """,
    ),
    "q4: the largest dot product instead of the nearest code": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            d = codebook.shape[1]
            flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
            idx = (flat @ codebook.T).argmax(1)
            e = codebook[idx]
            if z_e.dim() == 4:
                b, _, h, w = z_e.shape
                e, idx = e.reshape(b, h, w, d).movedim(-1, 1), idx.reshape(b, h, w)
            return z_e + (e - z_e).detach(), idx
        """,
    ),
    "q4: the codes without the straight-through gradient": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            d = codebook.shape[1]
            flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
            idx = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
            e = codebook[idx]
            if z_e.dim() == 4:
                b, _, h, w = z_e.shape
                e, idx = e.reshape(b, h, w, d).movedim(-1, 1), idx.reshape(b, h, w)
            return e, idx
        """,
    ),
    "q4: the decoder's gradient sent to the codebook too": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            d = codebook.shape[1]
            flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
            idx = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
            e = codebook[idx]
            if z_e.dim() == 4:
                b, _, h, w = z_e.shape
                e, idx = e.reshape(b, h, w, d).movedim(-1, 1), idx.reshape(b, h, w)
            return e + (z_e - z_e.detach()), idx
        """,
    ),
    "q4: flat indices for feature maps": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            d = codebook.shape[1]
            flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
            idx = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
            e = codebook[idx]
            if z_e.dim() == 4:
                b, _, h, w = z_e.shape
                e = e.reshape(b, h, w, d).movedim(-1, 1)
            return z_e + (e - z_e).detach(), idx
        """,
    ),
}


@pytest.mark.parametrize("label", list(WRONG))
def test_wrong_answers_fail_with_a_hint(label):
    qid, source = WRONG[label]
    result = run(qid, source)
    assert not result.passed, label
    failing = [c for c in result.cases if not c.passed]
    assert failing and all(c.message for c in failing)


SHORTCUTS = {
    "q1 through torch.distributions": (
        "q1",
        """
        from torch.distributions import Normal, kl_divergence
        def gaussian_kl(mu, logvar, prior_mu, prior_logvar):
            q, p = Normal(mu, (0.5 * logvar).exp()), Normal(prior_mu, (0.5 * prior_logvar).exp())
            return kl_divergence(q, p).flatten(1).sum(1)
        """,
        "torch.distributions",
    ),
    "q3 through F.binary_cross_entropy": (
        "q3",
        """
        def vae_loss(x, x_hat, mu, logvar, beta):
            z = torch.zeros_like(mu)
            bce = F.binary_cross_entropy(x_hat, x, reduction="sum") / len(x)
            return bce + beta * gaussian_kl(mu, logvar, z, z).mean()
        """,
        "binary_cross_entropy",
    ),
    "q4 through torch.cdist": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            d = codebook.shape[1]
            flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
            idx = torch.cdist(flat, codebook).argmin(1)
            e = codebook[idx]
            if z_e.dim() == 4:
                b, _, h, w = z_e.shape
                e, idx = e.reshape(b, h, w, d).movedim(-1, 1), idx.reshape(b, h, w)
            return z_e + (e - z_e).detach(), idx
        """,
        "cdist",
    ),
    "q4 through the course's quantize": (
        "q4",
        """
        def vector_quantize(z_e, codebook):
            from utils.models.generative import quantize
            return quantize(z_e, codebook)
        """,
        "utils.models.generative",
    ),
}


@pytest.mark.parametrize("label", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_but_are_right_without_the_watch(label):
    qid, source, name = SHORTCUTS[label]
    caught = run(qid, "import torch.nn.functional as F", source)
    assert not caught.passed and name in caught.line() + " ".join(c.message for c in caught.cases)
    right = run(qid, "import torch.nn.functional as F", source, forbid=False)
    assert right.passed, right.line()  # right, just forbidden


# --------------------------------------------------------------------------- q5 make it work


def test_make_it_work_data_and_metric():
    q = QSET.question("q5")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 60 and q.metric is checks.psnr
    noisy, clean = checks.held_out_noisy_digits(4)
    assert noisy.shape == clean.shape == (1000, 1, 28, 28)
    assert torch.equal(noisy, checks.held_out_noisy_digits(4)[0])  # the seed fixes the noise
    assert not torch.equal(noisy, checks.held_out_noisy_digits(5)[0])
    assert 0 <= noisy.min() and noisy.max() <= 1
    x_fit, x_val = checks.denoising_digits()
    assert x_fit.shape == (3500, 1, 28, 28) and x_val.shape == (500, 1, 28, 28)
    seen = {tuple(x.flatten().tolist()) for x in torch.cat([x_fit, x_val])[:, :, 10:18, 10:18]}
    assert not any(tuple(x.flatten().tolist()) in seen for x in clean[:50, :, 10:18, 10:18] if x.any())
    # PSNR = 10 log10(1 / MSE) over all pixels, split into batches or not
    half = torch.full_like(clean, 0.5)
    mse = (half - clean).pow(2).mean().item()
    assert checks.psnr([half[:600], half[600:]], clean) == pytest.approx(10 * math.log10(1 / mse))


def grade(q, outputs_of, noisy, clean):
    batches = [noisy[i : i + q.batch_size] for i in range(0, len(noisy), q.batch_size)]
    outputs = [outputs_of(b) for b in batches]
    return verdict(q, Prediction(outputs=outputs), batches, clean, len(noisy))


def test_make_it_work_steps_and_messages():
    q = QSET.question("q5")
    noisy, clean = checks.held_out_noisy_digits(0)
    assert grade(q, lambda b: b, noisy, clean)[0] == 0  # the noisy input: about 9 dB
    points, text, _ = grade(q, lambda b: F.avg_pool2d(b, 3, 1, 1), noisy, clean)  # a blur: some dB, < 15
    assert points == 0 and "psnr" in text
    points, text, _ = verdict(
        q, Prediction(outputs=list(clean.split(250))), list(noisy.split(250)), clean, 1000
    )
    assert points == 2 and "2/2 points" in text
    points, text, _ = grade(q, lambda b: b[:, :, :27], noisy, clean)  # a wrong shape: a clear message
    assert points == 0 and "(1000, 1, 28, 28)" in text
    points, text, _ = grade(q, lambda b: b.numpy(), noisy, clean)
    assert points == 0 and "tensor" in text


# --------------------------------------------------------------------------- review questions


def test_review_answers_are_what_their_definitions_give():
    reviews = {q.id: q for q in QSET.questions if isinstance(q, Review)}
    mu, logvar = torch.tensor([[0.6, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    from torch.distributions import Independent, Normal, kl_divergence

    kl = kl_divergence(
        Independent(Normal(mu, (0.5 * logvar).exp()), 1), Independent(Normal(0 * mu, 1 + 0 * mu), 1)
    )
    assert reviews["r1"].answer == pytest.approx(kl.item(), abs=1e-4)
    ae = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.Linear(16, 784))
    assert reviews["r2"].answer == sum(p.numel() for p in ae.parameters())
    assert reviews["r3"].answer == 7 * 7 * round(math.log2(512))
    auc = roc_auc_score([1, 1, 1, 0, 0, 0, 0], [0.9, 0.4, 0.7, 0.1, 0.5, 0.3, 0.8])
    assert reviews["r4"].answer == pytest.approx(auc)
    answers = {}
    exec(next(s for s in _code_cells() if s.startswith("answers = {}")), {}, answers)
    for qid, q in reviews.items():
        assert q.verdict(answers["answers"]) == (True, "right"), qid
    for qid, wrong in {
        "r1": 1.18,
        "r2": 25104,
        "r3": 49,
        "r4": 0.806,
        "r5": {"a", "b", "c"},
        "r6": {"a", "b"},
    }.items():
        right, message = reviews[qid].verdict({qid: wrong})
        assert not right and reviews[qid].explain in message, qid


def _code_cells() -> list[str]:
    import nbformat

    from conftest import ROOT

    nb = nbformat.read(ROOT / "solutions" / "13_autoencoders.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]
