"""The 09_transfer_learning questions: the reference solutions of the solution notebook pass every case,
plausible wrong answers fail, the chapter's own versions in utils are caught as forbidden, and the
make-it-work data are the test split the exercise never loads."""

from __future__ import annotations

import math
import textwrap

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from utils.grading import evaluate, get_assignment
from utils.grading.checks import transfer_learning as ch09

QSET = get_assignment("09_transfer_learning")
SOLUTION = ROOT / "solutions" / "09_transfer_learning.ipynb"


def namespace(*extra: str) -> dict:
    """The function cells of the solution notebook, executed in a fresh namespace, then ``extra`` sources."""
    ns: dict = {"torch": torch, "F": F, "nn": torch.nn}
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith("def "):
            exec(cell.source, ns)
    for source in extra:
        exec(textwrap.dedent(source), ns)
    return ns


def run(qid: str, ns: dict, seed: int = 0):
    q = QSET.question(qid)
    return evaluate(q, {name: ns[name] for name in q.functions}, seed=seed)


def test_question_set():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 8
    implement = sum(q.points for q in QSET.questions if q.id in ("q1", "q2", "q3", "q4"))
    assert implement >= QSET.max_score / 2  # most points for what the lesson did not print


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("qid", ["q1", "q2", "q3"])
def test_reference_solutions_pass_every_case(qid, seed):
    result = run(qid, namespace(), seed)
    assert result.passed, result.line()
    assert result.cases_passed == len(result.cases) >= 4


def test_supcon_reference_is_nt_xent_for_two_views_and_matches_a_loop():
    from utils.ssl import nt_xent

    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(6, 8, generator=g, dtype=torch.float64),
        torch.randn(6, 8, generator=g, dtype=torch.float64),
    )
    labels = torch.arange(6).repeat(2)
    assert torch.allclose(ch09.supcon_reference(torch.cat([z1, z2]), labels, 0.3), nt_xent(z1, z2, 0.3))
    # a loop over anchors and positives, the formula as written
    z, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 1, 2, 0])
    zn = F.normalize(z, dim=1)
    terms = []
    for i in range(7):
        others = [a for a in range(7) if a != i]
        denominator = torch.logsumexp(torch.stack([zn[i] @ zn[a] / 0.2 for a in others]), 0)
        positives = [p for p in others if y[p] == y[i]]
        if positives:
            terms.append(sum(-(zn[i] @ zn[p] / 0.2 - denominator) for p in positives) / len(positives))
    assert torch.allclose(ch09.supcon_reference(z, y, 0.2), torch.stack(terms).mean())


WRONG_SUPCON = {
    "mean inside the log (L_in)": """
        def supcon_loss(z, labels, temperature):
            zn = F.normalize(z, dim=1)
            eye = torch.eye(len(z), dtype=torch.bool)
            logits = (zn @ zn.T / temperature).masked_fill(eye, float("-inf"))
            prob = logits.softmax(dim=1)
            pos = (labels[:, None] == labels[None, :]) & ~eye
            has = pos.sum(1) > 0
            return -torch.log((prob * pos).sum(1)[has] / pos.sum(1)[has]).mean()
    """,
    "anchor in its own denominator": """
        def supcon_loss(z, labels, temperature):
            zn = F.normalize(z, dim=1)
            eye = torch.eye(len(z), dtype=torch.bool)
            log_prob = (zn @ zn.T / temperature).log_softmax(dim=1)
            pos = (labels[:, None] == labels[None, :]) & ~eye
            has = pos.sum(1) > 0
            return (-(log_prob * pos).sum(1)[has] / pos.sum(1)[has]).mean()
    """,
    "no normalisation": """
        def supcon_loss(z, labels, temperature):
            eye = torch.eye(len(z), dtype=torch.bool)
            logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
            log_prob = logits.log_softmax(dim=1)
            pos = (labels[:, None] == labels[None, :]) & ~eye
            has = pos.sum(1) > 0
            return (-log_prob.masked_fill(~pos, 0).sum(1)[has] / pos.sum(1)[has]).mean()
    """,
    "anchors without positives averaged in": """
        def supcon_loss(z, labels, temperature):
            zn = F.normalize(z, dim=1)
            eye = torch.eye(len(z), dtype=torch.bool)
            log_prob = (zn @ zn.T / temperature).masked_fill(eye, float("-inf")).log_softmax(dim=1)
            pos = (labels[:, None] == labels[None, :]) & ~eye
            return (-log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp_min(1)).mean()
    """,
    "the chapter's nt_xent (forbidden)": """
        def supcon_loss(z, labels, temperature):
            from utils.ssl import nt_xent
            n = len(z) // 2
            return nt_xent(z[:n], z[n:], temperature)
    """,
}


@pytest.mark.parametrize("name", list(WRONG_SUPCON))
def test_wrong_supervised_contrastive_losses_fail(name):
    result = run("q1", namespace(WRONG_SUPCON[name]))
    assert not result.passed, name
    if "forbidden" in name:
        assert "utils.ssl" in result.line()


WRONG_GROUPS = {
    "frozen parameters kept": """
        def discriminative_param_groups(model, base_lr, factor):
            parts = [model.get_classifier(), *reversed(list(model.stages))]
            seen, groups = set(), []
            for depth, part in enumerate(parts):
                ps = [p for p in part.parameters() if id(p) not in seen]
                seen.update(id(p) for p in ps)
                groups.append({"params": ps, "lr": base_lr * factor**depth})
            groups.append({"params": [p for p in model.parameters() if id(p) not in seen],
                           "lr": base_lr * factor ** len(parts)})
            return [g for g in groups if g["params"]]
    """,
    "the stem forgotten": """
        def discriminative_param_groups(model, base_lr, factor):
            parts = [model.get_classifier(), *reversed(list(model.stages))]
            return [{"params": [p for p in part.parameters() if p.requires_grad], "lr": base_lr * factor**d}
                    for d, part in enumerate(parts) if any(p.requires_grad for p in part.parameters())]
    """,
    "rates growing towards the input": """
        def discriminative_param_groups(model, base_lr, factor):
            parts = [model.get_classifier(), *reversed(list(model.stages))]
            seen, groups = set(), []
            for depth, part in enumerate(parts):
                ps = [p for p in part.parameters() if id(p) not in seen and p.requires_grad]
                seen.update(id(p) for p in part.parameters())
                groups.append({"params": ps, "lr": base_lr / factor**depth})
            rest = [p for p in model.parameters() if id(p) not in seen and p.requires_grad]
            groups.append({"params": rest, "lr": base_lr / factor ** len(parts)})
            return [g for g in groups if g["params"]]
    """,
    "every parameter in one group per part, the head counted twice": """
        def discriminative_param_groups(model, base_lr, factor):
            head = [p for p in model.get_classifier().parameters() if p.requires_grad]
            groups = [{"params": head, "lr": base_lr}]
            everything = [p for p in model.parameters() if p.requires_grad]
            groups.append({"params": everything, "lr": base_lr * factor})
            return groups
    """,
    "the chapter's function (forbidden)": """
        def discriminative_param_groups(model, base_lr, factor):
            from utils.transfer import discriminative_param_groups as reference
            return reference(model, base_lr, factor)
    """,
}


@pytest.mark.parametrize("name", list(WRONG_GROUPS))
def test_wrong_parameter_groups_fail(name):
    result = run("q2", namespace(WRONG_GROUPS[name]))
    assert not result.passed, name
    if "forbidden" in name:
        assert "utils.transfer" in result.line()


def _adabn_variant(body: str) -> str:
    return "def adabn_(model, images, batch_size):\n" + textwrap.indent(textwrap.dedent(body), "    ")


WRONG_ADABN = {
    "momentum=None: the mean of the batch variances": _adabn_variant("""
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        modes = [(m, m.training) for m in model.modules()]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
        for m, (momentum, count) in zip(layers, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
        for m, mode in modes:
            m.train(mode)
        return model
    """),
    "the whole model in train mode (dropout on), modes not restored": _adabn_variant("""
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        stats = {m: [0.0, 0.0, 0] for m in layers}
        def hook(module, inputs, output):
            x = inputs[0].double()
            dims = [0, *range(2, x.dim())]
            s = stats[module]
            s[0] = s[0] + x.sum(dims); s[1] = s[1] + x.pow(2).sum(dims); s[2] += x.numel() // x.shape[1]
        handles = [m.register_forward_hook(hook) for m in layers]
        counts = [m.num_batches_tracked.clone() for m in layers]
        model.train()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, c in zip(layers, counts):
                s, s2, n = stats[m]
                m.running_mean.copy_(s / n); m.running_var.copy_((s2 - s * s / n) / (n - 1))
                m.num_batches_tracked.copy_(c)
        return model
    """),
    "biased variance": _adabn_variant("""
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        stats = {m: [0.0, 0.0, 0] for m in layers}
        def hook(module, inputs, output):
            x = inputs[0].double()
            dims = [0, *range(2, x.dim())]
            s = stats[module]
            s[0] = s[0] + x.sum(dims); s[1] = s[1] + x.pow(2).sum(dims); s[2] += x.numel() // x.shape[1]
        handles = [m.register_forward_hook(hook) for m in layers]
        modes = [(m, m.training) for m in model.modules()]
        counts = [m.num_batches_tracked.clone() for m in layers]
        model.eval()
        for m in layers:
            m.train()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.train(mode)
        with torch.no_grad():
            for m, c in zip(layers, counts):
                s, s2, n = stats[m]
                m.running_mean.copy_(s / n); m.running_var.copy_(s2 / n - (s / n) ** 2)
                m.num_batches_tracked.copy_(c)
        return model
    """),
    "the chapter's adabn (forbidden)": """
        def adabn_(model, images, batch_size):
            from utils.transfer import adabn
            return adabn(model, images, batch_size=batch_size)
    """,
}


@pytest.mark.parametrize("name", list(WRONG_ADABN))
def test_wrong_adabn_fails(name):
    result = run("q3", namespace(WRONG_ADABN[name]))
    assert not result.passed, name
    if "forbidden" in name:
        assert "utils.transfer" in result.line()


def test_review_answers():
    right = {
        "r1": 1280 * 10 + 10,
        "r2": 1e-3 * 0.5**5,
        "r3": 2 * 128 - 2,
        "r4": math.log(255),
        "r5": {"a", "c"},
    }
    right["r6"] = "a"
    for review in QSET.questions[4:]:
        assert review.is_right(right[review.id]), review.id
    wrong = {
        "r1": 1280 * 10,
        "r2": 1e-3 * 0.5**6,
        "r3": 255,
        "r4": math.log(256),
        "r5": {"a", "b"},
        "r6": "c",
    }
    for review in QSET.questions[4:]:
        assert not review.is_right(wrong[review.id]), review.id


def test_make_it_work_data_are_the_test_split_the_exercise_never_loads():
    import utils.data

    x_fit, y_fit, x_val, y_val = ch09.few_labels()
    assert x_fit.shape == (200, 1, 28, 28) and torch.bincount(y_fit).tolist() == [20] * 10
    assert x_val.shape == (300, 1, 28, 28) and len(y_val) == 300
    x_test, y_test = ch09.held_out_animals(0)
    assert torch.equal(x_test, utils.data.animals("test").images) and len(y_test) == 1998
    train_rows = {tuple(r) for r in torch.cat([x_fit, x_val]).flatten(1).mul(255).round().int().tolist()}
    assert not train_rows & {tuple(r) for r in x_test.flatten(1).mul(255).round().int().tolist()}
    fit_rows = {tuple(r) for r in x_fit.flatten(1).mul(255).round().int().tolist()}
    assert not fit_rows & {tuple(r) for r in x_val.flatten(1).mul(255).round().int().tolist()}
    source = SOLUTION.read_text()
    assert "held_out_animals" not in source and 'animals("test")' not in source
