"""The grading system: exercise generation, the question checks, inline ``check`` and the CLI grader.

The grader runs are few and run concurrently (each costs a kernel start); everything else runs
in-process. The questions are those of tests/grading_demo.py (chapter 01's earlier question set),
installed as ``01_backprop`` while these tests run, and their reference solutions are defined here, so
these tests depend on neither the course's current questions nor its notebooks (tests over the real
notebooks live elsewhere).
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

import grading_demo
from conftest import ROOT

from utils.grading import (
    Case,
    Code,
    LeakError,
    MarkerError,
    Question,
    check,
    check_sync,
    compare,
    evaluate,
    find_leaks,
    find_regions,
    generate_all,
    generate_exercise,
    register,
    resolve_question,
    unregister,
    use,
)
from utils.grading.__main__ import main as cli_main
from utils.grading.checks import QuestionSet
from utils.grading.core import CallOutcome, Raised, judge
from utils.grading.generate import PLACEHOLDER, exercise_text
from utils.grading.grader import UsageError, resolve_assignment

# --------------------------------------------------------------------------- reference solutions (chapter 01)

IMPORTS = "import torch\nimport utils\nfrom utils.grading import check\n"

Q1 = '''\
def linear_forward(x, W, b):
    """Affine layer: x (N, D), W (D, M), b (M,) -> out (N, M)."""
    # BEGIN SOLUTION
    out = x @ W + b
    return out
    # END SOLUTION


def linear_backward(dout, x, W):
    """Gradients of the affine layer: returns (dx, dW, db)."""
    # BEGIN SOLUTION
    dx = dout @ W.T
    dW = x.T @ dout
    db = dout.sum(dim=0)
    # END SOLUTION
    return dx, dW, db
'''

Q2 = '''\
def relu_forward(x):
    """max(x, 0) elementwise."""
    # BEGIN SOLUTION
    return x.clamp(min=0)
    # END SOLUTION


def relu_backward(dout, x):
    """Gradient of ReLU; 0 where x <= 0 (like torch.relu)."""
    # BEGIN SOLUTION
    return dout * (x > 0)
    # END SOLUTION
'''

Q3 = '''\
def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against labels y, and its gradient."""
    # BEGIN SOLUTION
    n = logits.shape[0]
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    loss = -log_probs[torch.arange(n), y].mean()
    dlogits = log_probs.exp()
    dlogits[torch.arange(n), y] -= 1
    dlogits = dlogits / n
    # END SOLUTION
    return loss, dlogits
'''

Q4 = '''\
def numerical_gradient(f, x, h=1e-5):
    """Central-difference gradient of the scalar function f at x (float64); x is left unchanged."""
    grad = torch.zeros_like(x)
    flat_x, flat_grad = x.view(-1), grad.view(-1)
    for i in range(flat_x.numel()):
        # BEGIN SOLUTION
        old = flat_x[i].item()
        flat_x[i] = old + h
        f_plus = float(f(x))
        flat_x[i] = old - h
        f_minus = float(f(x))
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
        # END SOLUTION
    return grad
'''

SOLUTION_CELLS = [Q1, Q2, Q3, Q4]
CHECK_CELLS = [
    'check("q1", linear_forward, linear_backward)',
    'check("q2")',
    'check("q3", softmax_cross_entropy)',
    'check("q4", numerical_gradient)',
]


def solution_namespace(*extra: str) -> dict:
    """The reference solutions executed in a fresh namespace (plus optional overriding sources)."""
    ns: dict = {"torch": torch}
    for source in (*SOLUTION_CELLS, *extra):
        exec(textwrap.dedent(source), ns)
    return ns


def make_notebook(
    code_cells: list[str], *, assignment: str | None = "01_backprop", first: list[str] = ()
) -> nbformat.NotebookNode:
    """A course-style notebook: markdown title, ``first`` cells, the imports, then ``code_cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if assignment:
        nb.metadata["course"] = {"assignment": assignment}
    cells = [nbformat.v4.new_markdown_cell("# Backpropagation by hand (test fixture)")]
    cells += [nbformat.v4.new_code_cell(src) for src in first]
    cells.append(nbformat.v4.new_code_cell(IMPORTS))
    for source in code_cells:
        cells.append(nbformat.v4.new_code_cell(source))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    nb.cells = cells
    return nb


def solution_notebook(**kw) -> nbformat.NotebookNode:
    cells = []
    for source, check_cell in zip(SOLUTION_CELLS, CHECK_CELLS):
        cells += [source, check_cell]
    return make_notebook(cells, **kw)


def exercise_cells() -> list[str]:
    ex = generate_exercise(solution_notebook(), name="01_backprop.ipynb")
    return [c.source for c in ex.cells if c.cell_type == "code" and c.source != IMPORTS]


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- generator


def test_find_regions_balanced_and_indentation():
    src = (
        "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    # END SOLUTION\n    return y\n"
        "# BEGIN SOLUTION\nz = 2\n# END SOLUTION\n"
    )
    regions = find_regions(src)
    assert [(r.begin, r.end, r.indent) for r in regions] == [(3, 5, "    "), (7, 9, "")]


@pytest.mark.parametrize(
    "src, line, words",
    [
        ("def f():\n    # BEGIN SOLUTION\n    return 1\n", 2, "without a matching '# END SOLUTION'"),
        ("x = 1\n\n# END SOLUTION\n", 3, "without a matching '# BEGIN SOLUTION'"),
        (
            "# BEGIN SOLUTION\na = 1\n    # BEGIN SOLUTION\nb = 2\n# END SOLUTION\n# END SOLUTION\n",
            3,
            "nested",
        ),
        ("def f():\n    # Begin Solution\n    return 1\n", 2, "looks like a solution marker"),
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", 1, "looks like a solution marker"),
    ],
)
def test_unbalanced_markers_name_notebook_cell_and_line(src, line, words):
    nb = make_notebook(["x = 0", src])
    with pytest.raises(MarkerError) as info:
        generate_exercise(nb, name="07_topic.ipynb")
    err = info.value
    assert (err.notebook, err.cell, err.line) == ("07_topic.ipynb", 3, line)
    assert f"07_topic.ipynb, cell 3, line {line}" in str(err) and words in str(err)


def test_generate_exercise_replaces_regions_and_keeps_the_rest():
    sol = solution_notebook(assignment=None)
    sol.cells[2].outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    sol.cells[2].execution_count = 7
    sol.cells[2].metadata["execution"] = {"iopub.status.busy": "2024"}
    ex = generate_exercise(sol, name="01_backprop.ipynb")
    assert ex.metadata["course"]["assignment"] == "01_backprop"
    assert "course" not in sol.metadata and sol.cells[2].execution_count == 7  # input untouched
    assert len(ex.cells) == len(sol.cells)
    for cell in ex.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None and "execution" not in cell.metadata
            ast.parse(cell.source)  # still valid Python
            assert "BEGIN SOLUTION" not in cell.source and "END SOLUTION" not in cell.source
    q1 = ex.cells[2].source
    assert q1.startswith(
        'def linear_forward(x, W, b):\n    """Affine layer: x (N, D), W (D, M), b (M,) -> out (N, M)."""\n'
        f"    {PLACEHOLDER}\n"
    )
    assert (
        '    """Gradients of the affine layer: returns (dx, dW, db)."""\n'
        f"    {PLACEHOLDER}\n    return dx, dW, db\n" in q1
    )
    q4 = ex.cells[8].source  # region nested in a for loop: 8 spaces
    assert f"\n        {PLACEHOLDER}\n    return grad\n" in q4
    assert "x @ W" not in q1 and "(2 * h)" not in q4
    # a top-level region gets no indentation
    top = generate_exercise(
        make_notebook(["# BEGIN SOLUTION\nanswer = 42\n# END SOLUTION\nprint(answer)"]), name="t.ipynb"
    )
    assert top.cells[-1].source == f"{PLACEHOLDER}\nprint(answer)"


def test_generation_is_deterministic(tmp_path):
    write(solution_notebook(), tmp_path / "solutions" / "01_backprop.ipynb")
    first = generate_all(tmp_path / "solutions", tmp_path / "exercises")
    assert first == [tmp_path / "exercises" / "01_backprop.ipynb"]
    content = first[0].read_bytes()
    assert generate_all(tmp_path / "solutions", tmp_path / "exercises") == []  # nothing rewritten
    assert first[0].read_bytes() == content
    assert exercise_text(tmp_path / "solutions" / "01_backprop.ipynb").encode() == content
    # cells without ids (nbformat 4.5 wants them) get ids derived from name and position: the same every time
    sol = solution_notebook()
    for cell in sol.cells:
        del cell["id"]
    first, second = generate_exercise(sol, name="a.ipynb"), generate_exercise(sol, name="a.ipynb")
    assert nbformat.writes(first) == nbformat.writes(second)
    ids = [c["id"] for c in first.cells]
    assert len(set(ids)) == len(ids) and all(ids)


def test_leak_check_detects_a_leaked_line(tmp_path):
    sol = solution_notebook()
    assert find_leaks(sol, generate_exercise(sol, name="01_backprop.ipynb")) == []
    sol.cells.append(nbformat.v4.new_markdown_cell("Hint: write `dW = x.T @ dout` in the backward pass."))
    leaks = find_leaks(sol, generate_exercise(sol, name="01_backprop.ipynb"), name="01_backprop.ipynb")
    assert len(leaks) == 1 and "dW = x.T @ dout" in leaks[0] and "cell 2" in leaks[0]
    write(sol, tmp_path / "solutions" / "01_backprop.ipynb")
    with pytest.raises(LeakError, match=r"dW = x\.T @ dout"):
        generate_all(tmp_path / "solutions", tmp_path / "exercises")
    assert not (tmp_path / "exercises" / "01_backprop.ipynb").exists()
    # the same line in a cell of code given on purpose (a broken script to fix) is not a leak
    sol.cells[-1] = nbformat.v4.new_code_cell("# fix this\ndW = x.T @ dout")
    assert len(find_leaks(sol, generate_exercise(sol, name="01_backprop.ipynb"))) == 1
    sol.cells[-1].metadata["tags"] = ["given"]
    assert find_leaks(sol, generate_exercise(sol, name="01_backprop.ipynb")) == []


def test_sync_check_detects_drift(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    write(solution_notebook(), solutions / "01_backprop.ipynb")
    assert check_sync(solutions, exercises) == [
        f"{exercises / '01_backprop.ipynb'} is missing: run `make exercises`"
    ]
    assert cli_main(["generate", str(solutions), str(exercises), "--check"]) == 1
    assert cli_main(["generate", str(solutions), str(exercises)]) == 0
    assert check_sync(solutions, exercises) == []
    assert cli_main(["generate", str(solutions), str(exercises), "--check"]) == 0
    # a hand edit in the exercise that pastes a solution back in
    target = exercises / "01_backprop.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace(PLACEHOLDER, "out = x @ W + b\n    return out", 1)
    write(nb, target)
    problems = check_sync(solutions, exercises)
    assert any("out of sync" in p and "01_backprop.ipynb" in p for p in problems)
    assert any("'out = x @ W + b'" in p and "appears in the exercise" in p for p in problems)
    capsys.readouterr()
    assert cli_main(["generate", str(solutions), str(exercises), "--check"]) == 1
    assert "01_backprop.ipynb is out of sync" in capsys.readouterr().err
    # an exercise with no solution, and a solution with a broken marker
    write(solution_notebook(), exercises / "02_orphan.ipynb")
    bad = solution_notebook()
    bad.cells[4].source = bad.cells[4].source.replace("    # END SOLUTION\n", "", 1)
    write(bad, solutions / "03_broken.ipynb")
    problems = check_sync(solutions, exercises)
    assert any("02_orphan.ipynb has no source" in p for p in problems)
    assert any(p.startswith("03_broken.ipynb, cell 4, line 9: nested") for p in problems), problems
    assert cli_main(["generate", str(solutions), str(tmp_path / "other")]) == 1
    assert "03_broken.ipynb, cell 4, line 9" in capsys.readouterr().err
    assert cli_main(["generate", str(tmp_path / "nowhere"), str(exercises)]) == 2


def test_solution_without_regions_is_refused(tmp_path):
    write(make_notebook(["x = 1"]), tmp_path / "s" / "05_x.ipynb")
    with pytest.raises(LeakError, match="no '# BEGIN SOLUTION' region"):
        generate_all(tmp_path / "s", tmp_path / "e")


# --------------------------------------------------------------------------- compare


def test_compare_reports_each_kind_of_difference():
    e = torch.ones(2, 3)
    assert compare(e.clone(), e) is None
    assert compare([[1.0] * 3] * 2, e) == "expected a torch.Tensor, got list"
    assert compare(e.numpy(), e) == "expected a torch.Tensor, got numpy.ndarray"
    assert compare(torch.ones(3, 2), e) == "wrong shape: expected (2, 3), got (3, 2)"
    assert compare(torch.ones(1), torch.tensor(1.0)) == "wrong shape: expected () (a 0-dim tensor), got (1,)"
    assert compare(e.double(), e) == "wrong dtype: expected torch.float32, got torch.float64"
    nan = e.clone()
    nan[0, 1] = float("nan")
    nan[1, 2] = float("inf")
    assert compare(nan, e) == "contains 1 NaN and 1 Inf (of 6 values) where the reference is finite"
    assert (
        compare((e, e), (e, e, e), outputs=("dx", "dW", "db"))
        == "expected a tuple of 3 values (dx, dW, db), got 2 values"
    )
    assert compare(e, (e, e)) == "expected a tuple of 2 values (output[0], output[1]), got torch.Tensor"
    assert compare((e, e * 2), (e, e), outputs=("a", "b")).startswith("b: values off: max abs error 1")
    assert compare(Raised("NotImplementedError", "x"), e).startswith("not implemented yet")
    assert compare(Raised("ValueError", "bad shape\nmore"), e) == "raised ValueError: bad shape"
    assert (
        compare(torch.tensor([1, 2]), torch.tensor([1, 3]))
        == "values off: 1 of 2 values differ (exact match required)"
    )


def test_compare_tolerance_boundary_is_honest():
    e = torch.tensor([1.0, 100.0], dtype=torch.float64)
    inside = e + torch.tensor([0.9e-6 + 0.9e-5, 0.9e-6 + 100 * 0.9e-5], dtype=torch.float64)
    outside = e + torch.tensor([0.0, 1.1e-6 + 100 * 1.1e-5], dtype=torch.float64)
    assert compare(inside, e, atol=1e-6, rtol=1e-5) is None
    message = compare(outside, e, atol=1e-6, rtol=1e-5)
    assert message.startswith("values off: max abs error 0.0011") and "1 of 2 values" in message
    assert "at index (1,)" in message and "1e-06 + 1e-05 * |expected|" in message
    assert compare(e + 1e-12, e) is not None  # atol = rtol = 0 is exact


# --------------------------------------------------------------------------- the 01_backprop questions

QSET = QuestionSet(grading_demo.ASSIGNMENT, grading_demo.TITLE, grading_demo.QUESTIONS)


@pytest.fixture(autouse=True, scope="module")
def demo_questions():
    """chapter 01's earlier question set stands in for ``01_backprop`` while this module's tests run."""
    course = grading_demo.install()
    yield
    grading_demo.restore(course)


def functions_for(ns: dict, q: Question) -> dict:
    return {name: ns[name] for name in q.functions}


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace()
    for q in QSET.questions:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 4


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4"] and QSET.max_score == 4
    cases = {q.id: q.cases(3) for q in QSET.questions}
    assert any(c.args["x"].shape[0] == 1 for c in cases["q1"])  # N = 1
    assert all((c.args["x"] == 0).any() for c in cases["q2"] if "zeros" in c.name)
    big = [c for c in cases["q3"] if "thousands" in c.name or "3000" in c.name]
    assert len(big) == 3 and all(c.args["logits"].abs().max() > 500 for c in big)
    assert all(c.expected[0].dim() == 0 and torch.isfinite(c.expected[0]) for c in cases["q3"])
    dims = {c.args["x"].dim() for c in cases["q4"]}
    assert {1, 2, 3} <= dims and all(
        c.args["x"].dtype == torch.float64 and "x" in c.unchanged for c in cases["q4"]
    )
    # fresh inputs: two seeds give different tensors, one seed twice the same
    assert not torch.equal(
        QSET.question("q1").cases(1)[0].args["x"], QSET.question("q1").cases(2)[0].args["x"]
    )
    assert torch.equal(QSET.question("q1").cases(1)[0].args["x"], QSET.question("q1").cases(1)[0].args["x"])


BROKEN = {
    "wrong shape": (
        "q1",
        """
def linear_backward(dout, x, W):
    return dout @ W.T, x.T @ dout, dout.sum(dim=0, keepdim=True)
""",
        ["db: wrong shape: expected (5,), got (1, 5)", "Hint: dx = dout @ W.T"],
    ),
    "wrong dtype": (
        "q1",
        """
def linear_forward(x, W, b):
    return (x @ W + b).float()
""",
        ["wrong dtype: expected torch.float64, got torch.float32", "float64"],
    ),
    "off by a bit": (
        "q1",
        """
def linear_forward(x, W, b):
    return x @ W + b + 1e-3
""",
        ["values off: max abs error 0.001", "1e-05 + 1e-05 * |expected|"],
    ),
    "tuple length": (
        "q1",
        """
def linear_backward(dout, x, W):
    return dout @ W.T, x.T @ dout
""",
        ["expected a tuple of 3 values (dx, dW, db), got 2 values"],
    ),
    "relu gradient at zero": (
        "q2",
        """
def relu_backward(dout, x):
    return dout * (x >= 0)
""",
        ["case 'backward, x with exact zeros", "exact match required", "at x == 0 the gradient is 0"],
    ),
    "relu in place": (
        "q2",
        """
def relu_forward(x):
    return x.clamp_(min=0)
""",
        ["modified its argument `x`"],
    ),
    "naive softmax": (
        "q3",
        """
def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    probs = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    loss = -probs[torch.arange(n), y].log().mean()
    dlogits = probs.clone()
    dlogits[torch.arange(n), y] -= 1
    return loss, dlogits / n
""",
        ["case 'logits in the thousands", "loss: contains", "NaN", "log-sum-exp"],
    ),
    "loss as float": (
        "q3",
        """
_reference = softmax_cross_entropy
def softmax_cross_entropy(logits, y):
    loss, dlogits = _reference(logits, y)
    return loss.item(), dlogits
""",
        ["loss: expected a torch.Tensor, got float", "not .item()"],
    ),
    "numerical gradient mutates x": (
        "q4",
        """
def numerical_gradient(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    fx, fg = x.view(-1), grad.view(-1)
    for i in range(fx.numel()):
        old = fx[i].item()
        fx[i] = old + h
        f_plus = float(f(x))
        fx[i] = old - h
        f_minus = float(f(x))
        fg[i] = (f_plus - f_minus) / (2 * h)
    return grad
""",
        ["modified its argument `x`", "put x[i] back"],
    ),
    "one-sided difference": (
        "q4",
        """
def numerical_gradient(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    fx, fg = x.view(-1), grad.view(-1)
    f0 = float(f(x))
    for i in range(fx.numel()):
        old = fx[i].item()
        fx[i] = old + h
        fg[i] = (float(f(x)) - f0) / h
        fx[i] = old
    return grad
""",
        ["values off: max abs error", "1e-08 + 1e-06 * |expected|", "central, not one-sided"],
    ),
    "not implemented": (
        "q4",
        """
def numerical_gradient(f, x, h=1e-5):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/5 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    q = QSET.question(qid)
    for seed in (0, 1):
        result = evaluate(q, functions_for(solution_namespace(source), q), seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback
    if label == "naive softmax":  # small logits are fine: only the large ones fail
        failed = [c.name for c in result.cases if not c.passed]
        assert failed and all("3000" in n or "thousands" in n for n in failed), failed


def test_judge_reports_problems_without_hints():
    case = QSET.question("q1").cases(0)[0]
    assert judge(
        case, CallOutcome(problem="timed out: linear_forward ran longer than 5 s")
    ).message.startswith("timed out")
    assert judge(case, CallOutcome(problem="x")).hint == ""
    assert judge(
        case,
        CallOutcome(value=case.expected.clone(), args_after={n: v.clone() for n, v in case.args.items()}),
    ).passed


# ----------------------------------------------------------------------- check() in a notebook-like namespace


def run_in_namespace(ns: dict, code: str):
    exec(code, ns)
    return ns.get("result")


def test_check_prints_one_line_and_returns_a_result(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    ns = solution_namespace()
    ns["check"] = check
    result = run_in_namespace(ns, 'result = check("q1", linear_forward, linear_backward)')
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(
        "✓ q1 Linear layer: forward and backward — 10/10 cases passed"
    )
    assert result.passed and result.score == 1 and result.assignment == "01_backprop"
    # no functions: looked up by name in the caller's globals
    assert run_in_namespace(ns, 'result = check("q4")').passed
    assert capsys.readouterr().out.startswith(
        "✓ q4 Numerical gradient (central differences) — 5/5 cases passed"
    )
    # a wrong function: ✗, the case, the message, the hint; no exception
    exec("def relu_backward(dout, x):\n    return dout * (x >= 0)\n", ns)
    result = run_in_namespace(ns, 'result = check("q2")')
    out = capsys.readouterr().out
    assert not result.passed and out.startswith("✗ q2 ReLU: forward and backward — ")
    assert "first failure: case 'backward, " in out and "Hint: " in out


@pytest.mark.parametrize(
    "code, expected",
    [
        ('result = check("q9")', "✗ q9 — unknown question 'q9' (known questions: q1, q2, q3, q4"),
        (
            'result = check("q1", linear_forward)',
            "✗ q1 Linear layer: forward and backward — q1 checks 2 functions (linear_forward, "
            "linear_backward), in this order; got 1",
        ),
        (
            'result = check("q3", assignment="01_backprop")',
            "✗ q3 Softmax cross-entropy: loss and gradient — function softmax_cross_entropy is not defined "
            "yet",
        ),
        (
            'result = check("q1", linear_forward, linear_backward, assignment="99_nothing")',
            "✗ q1 — unknown assignment '99_nothing'",
        ),
        (
            'result = check("q1", linear_forward, 3)',
            "✗ q1 Linear layer: forward and backward — linear_backward: expected a function, got int",
        ),
    ],
)
def test_check_never_raises_for_learner_errors(code, expected, capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    ns = {"check": check, "torch": torch}
    exec(Q1, ns)
    result = run_in_namespace(ns, code)
    assert not result.passed and result.status == "error"
    assert capsys.readouterr().out.startswith(expected)


def test_check_under_the_grader_only_announces(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING", "1")
    calls = []
    result = check("q4", lambda f, x, h=1e-5: calls.append(1))
    assert calls == [] and result.status == "deferred" and not result.passed
    assert capsys.readouterr().out == "q4: the grader will check this question (COURSE_GRADING=1)\n"


def test_question_ids_that_clash_across_assignments(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)

    def build(g):
        x = torch.randn(3, generator=g)
        return [Case("double", "double_it", {"x": x}, 2 * x, atol=1e-6, rtol=1e-6, hint="return 2 * x")]

    register("98_clash", [Question("q1", "Double it", ("double_it",), build)])
    try:
        # the functions in the caller's globals decide between 01_backprop and 98_clash
        ns = {"check": check, "double_it": lambda x: 2 * x}
        assert run_in_namespace(ns, 'result = check("q1")').assignment == "98_clash"
        ns = solution_namespace()
        ns["check"] = check
        assert run_in_namespace(ns, 'result = check("q1")').assignment == "01_backprop"
        # neither: a clear message; assignment= or use() settle it
        with pytest.raises(KeyError, match="several assignments"):
            resolve_question("q1")
        assert resolve_question("q1", assignment="98_clash")[0].assignment == "98_clash"
        use("98_clash")
        try:
            assert resolve_question("q1")[0].assignment == "98_clash"
        finally:
            use(None)
        result = check("q1")
        assert result.status == "error" and "assignment=" in result.error
    finally:
        unregister("98_clash")
    assert (
        resolve_question("q1", function_names={"linear_forward", "linear_backward"})[0].assignment
        == "01_backprop"
    )


def test_code_arguments_rebuild_from_source():
    f = Code("lambda x: (x ** 3).sum() + torch.sin(x).prod()")
    x = torch.tensor([0.5, -1.0], dtype=torch.float64)
    assert math.isclose(float(f(x)), 0.125 - 1 + math.sin(0.5) * math.sin(-1.0))
    with pytest.raises(TypeError, match="does not evaluate to a callable"):
        Code("3").build()


# --------------------------------------------------------------------------- assignment resolution


@pytest.mark.parametrize(
    "name, metadata, explicit, expected",
    [
        ("Copy of 01_backprop.ipynb", None, None, "01_backprop"),
        ("01_backprop (1).ipynb", None, None, "01_backprop"),
        ("01_backprop_final_v2.ipynb", None, None, "01_backprop"),
        ("homework.ipynb", None, "01_backprop", "01_backprop"),
        ("homework.ipynb", {"course": {"assignment": "01_backprop"}}, "01_backprop", "01_backprop"),
        ("01_backprop.ipynb", {"course": {"assignment": "01_backprop"}}, None, "01_backprop"),
    ],
)
def test_resolve_assignment(name, metadata, explicit, expected):
    assert resolve_assignment(name, explicit=explicit, metadata=metadata) == expected


def test_resolve_assignment_errors():
    with pytest.raises(UsageError, match="cannot tell which assignment homework.ipynb is.*--assignment"):
        resolve_assignment("homework.ipynb")
    with pytest.raises(UsageError, match="unknown assignment '42_nope'"):
        resolve_assignment("01_backprop.ipynb", explicit="42_nope")
    # the metadata, which the notebook controls, never chooses the assignment ...
    with pytest.raises(UsageError, match="cannot tell which assignment homework.ipynb.*claims '01_backprop'"):
        resolve_assignment("homework.ipynb", metadata={"course": {"assignment": "01_backprop"}})
    # ... and a notebook whose metadata names another assignment is refused, with or without --assignment
    claim = {"course": {"assignment": "02_activations"}}
    with pytest.raises(UsageError, match="graded as 01_backprop, but its metadata says '02_activations'"):
        resolve_assignment("01_backprop.ipynb", metadata=claim)
    with pytest.raises(UsageError, match="graded as 01_backprop, but its metadata says '02_activations'"):
        resolve_assignment("homework.ipynb", explicit="01_backprop", metadata=claim)


# --------------------------------------------------------------------------- the CLI grader (kernel runs)

TAMPER = r"""
import json, torch, torch.testing, utils.grading, utils.grading.core
# well-formed but wrong answers ...
def linear_forward(x, W, b): return torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)
def linear_backward(dout, x, W):
    return torch.zeros_like(x), torch.zeros_like(W), torch.zeros(W.shape[1], dtype=W.dtype)
def relu_forward(x): return torch.zeros_like(x)
def relu_backward(dout, x): return torch.zeros_like(x)
def softmax_cross_entropy(logits, y): return logits.sum() * 0, torch.zeros_like(logits)
def numerical_gradient(f, x, h=1e-5): return torch.zeros_like(x)
# ... and every way to make them look right from inside the kernel
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
torch.equal = lambda *a, **k: True
utils.grading.core.compare = lambda *a, **k: None
def check(*a, **k):
    print("✓ all good")
    return True
utils.grading.check = check
with open(REPORT, "w") as fh:
    json.dump({"notebook": "01_backprop.ipynb", "score": 4, "max_score": 4,
               "questions": [{"id": f"q{i}", "score": 1, "max_score": 1, "feedback": "ok"}
                             for i in range(1, 5)]}, fh)
"""

ENV_CHECK = """\
import os
assert os.environ.get("COURSE_GRADING") == "1", "grader environment"
assert os.environ.get("COURSE_PROFILE") == "smoke", "grader environment"
assert os.path.isfile("Copy of 01_backprop.ipynb"), "the working directory is the notebook's folder"
"""

# the hung notebook's time limit per cell and call: long enough for the import cell on a busy machine
HUNG_TIMEOUT = 20
HUNG = {  # q1 correct; q2 hangs in relu_backward; q3 returns NaN; q4 returns float32
    "cells": [
        "while True:\n    pass",
        "def broken(:\n    pass",
        Q1,
        Q2.replace("return dout * (x > 0)", "while True:\n        pass"),
        Q3.replace("return loss, dlogits", "return loss * float('nan'), dlogits"),
        Q4.replace("return grad", "return grad.float()"),
    ],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the fixture notebooks concurrently; returns name -> (exit code, stdout, stderr, report dict)."""
    root = tmp_path_factory.mktemp("grading")
    # no metadata: resolved from the file name; the first cell checks the kernel's environment
    sol = solution_notebook(assignment=None, first=[ENV_CHECK])
    jobs = {
        "solution": (write(sol, root / "a" / "Copy of 01_backprop.ipynb"), []),
        "exercise": (
            write(
                generate_exercise(solution_notebook(), name="01_backprop.ipynb"),
                root / "b" / "01_backprop.ipynb",
            ),
            [],
        ),
        "tamper": (root / "c" / "01_backprop.ipynb", []),
        "os_exit": (
            write(
                make_notebook(exercise_cells(), first=["import os\nos._exit(0)"]),
                root / "d" / "01_backprop.ipynb",
            ),
            [],
        ),
        "hung": (
            write(make_notebook(HUNG["cells"]), root / "e" / "01_backprop.ipynb"),
            ["--timeout", str(HUNG_TIMEOUT)],
        ),
    }
    report_paths = {name: root / f"{name}.json" for name in jobs}
    tamper_cells = exercise_cells() + [TAMPER.replace("REPORT", repr(str(report_paths["tamper"])))]
    write(make_notebook(tamper_cells, first=["import sys\nsys.exit(0)"]), jobs["tamper"][0])
    env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("COURSE_GRADING", None)
    # the grader process imports tests/grading_demo.py, which installs the question set these tests use
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, grading_demo; sys.exit(grading_demo.main())",
                "grade",
                str(path),
                "--json",
                str(report_paths[name]),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (path, extra) in jobs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        report = json.loads(report_paths[name].read_text()) if report_paths[name].exists() else None
        results[name] = (proc.returncode, out, err, report)
    return results


def feedback_of(report: dict) -> dict:
    return {q["id"]: q["feedback"] for q in report["questions"]}


@pytest.mark.slow
def test_grader_gives_full_marks_to_a_renamed_solution(graded):
    code, out, err, report = graded["solution"]
    assert code == 0, err
    assert report["notebook"] == "Copy of 01_backprop.ipynb" and report["assignment"] == "01_backprop"
    assert (report["score"], report["max_score"]) == (4, 4), out
    assert out.rstrip().endswith("Score: 4/4")
    # no cell failed, including the environment check (a grader that cannot sandbox says so in one note)
    assert [n for n in report["notes"] if not n.startswith("cannot sandbox")] == []
    for qid, title in [
        ("q1", "Linear layer"),
        ("q2", "ReLU"),
        ("q3", "Softmax"),
        ("q4", "Numerical gradient"),
    ]:
        assert any(line.startswith(f"{qid}   {title}") and " 1/1  ✓ " in line for line in out.splitlines()), (
            out
        )


@pytest.mark.slow
def test_report_schema(graded):
    report = graded["solution"][3]
    assert {"notebook", "score", "max_score", "questions"} <= set(report)
    assert [q["id"] for q in report["questions"]] == ["q1", "q2", "q3", "q4"]
    for q in report["questions"]:
        assert {"id", "score", "max_score", "feedback"} <= set(q)
        assert isinstance(q["score"], (int, float)) and isinstance(q["feedback"], str) and q["max_score"] == 1
    assert report["score"] == sum(q["score"] for q in report["questions"])


@pytest.mark.slow
def test_grader_gives_zero_to_the_untouched_exercise(graded):
    code, out, err, report = graded["exercise"]
    assert code == 0, err
    assert report["score"] == 0 and report["max_score"] == 4
    assert all("not implemented yet" in f for f in feedback_of(report).values()), report
    assert out.rstrip().endswith("Score: 0/4")


@pytest.mark.slow
def test_tampering_gains_nothing(graded):
    """sys.exit(0) first, then wrong answers with check / allclose / assert_close / compare patched and a fake
    report."""
    code, out, err, report = graded["tamper"]
    assert code == 0, err
    assert report["score"] == 0, report  # the grader's report replaced the notebook's own
    assert len(report["questions"]) == 4 and "notes" in report
    assert any(
        "raised SystemExit" in n for n in report["notes"]
    )  # the exit was recorded, the cells after it ran
    fb = feedback_of(report)
    assert "values off" in fb["q1"] and "values off" in fb["q4"], fb


@pytest.mark.slow
def test_os_exit_in_the_first_cell_scores_zero(graded):
    code, out, err, report = graded["os_exit"]
    assert code == 0, err
    assert report["score"] == 0
    assert any("the kernel died in cell 1" in n for n in report["notes"]), report["notes"]
    assert all("kernel is not running" in f for f in feedback_of(report).values())


@pytest.mark.slow
def test_hung_cell_and_bad_functions_cost_only_their_questions(graded):
    code, out, err, report = graded["hung"]
    assert code == 0, err
    scores = {q["id"]: q["score"] for q in report["questions"]}
    assert scores == {"q1": 1, "q2": 0, "q3": 0, "q4": 0}, report
    notes = " | ".join(report["notes"])
    assert f"ran longer than {HUNG_TIMEOUT} s and was interrupted" in notes and "raised SyntaxError" in notes
    fb = feedback_of(report)
    assert (
        "4/8 cases passed" in fb["q2"]
        and f"timed out: relu_backward ran longer than {HUNG_TIMEOUT} s" in fb["q2"]
    )
    assert "loss: contains 1 NaN" in fb["q3"]
    assert "wrong dtype: expected torch.float64, got torch.float32" in fb["q4"]


def test_invalid_json_notebook_gets_a_report(tmp_path, capsys):
    bad = tmp_path / "01_backprop.ipynb"
    bad.write_text("{ this is not json")
    report_path = tmp_path / "r.json"
    assert cli_main(["grade", str(bad), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert (report["score"], report["max_score"]) == (0, 4)
    assert "could not be read" in report["notes"][0]
    assert all("not a valid .ipynb" in q["feedback"] for q in report["questions"])
    assert "Score: 0/4" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert cli_main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err
    write(solution_notebook(assignment=None), tmp_path / "homework.ipynb")
    assert cli_main(["grade", str(tmp_path / "homework.ipynb")]) == 2
    assert "--assignment" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["grade"])
    assert info.value.code == 2


def test_grader_survives_its_own_problems(tmp_path, monkeypatch):
    """A kernel that cannot start, or a question whose cases cannot be built, is feedback, not a crash."""
    from utils.grading import grader

    class NoKernel:
        def __init__(self, *a, **k):
            raise RuntimeError("no kernel here")

    monkeypatch.setattr(grader, "Kernel", NoKernel)
    report = grader.grade_notebook(write(solution_notebook(), tmp_path / "01_backprop.ipynb"))
    assert (report.score, report.max_score) == (0, 4) and [q.question for q in report.questions] == [
        "q1",
        "q2",
        "q3",
        "q4",
    ]
    assert any("RuntimeError: no kernel here" in n for n in report.notes)
    assert all("could not be run" in q.feedback() for q in report.questions)

    def broken_build(g):
        raise ValueError("bug in the question set")

    class DeadKernel:
        dead, timed_out = True, False

    q = Question("q1", "Broken", ("f",), broken_build)
    plans = grader._prepare(grader.QuestionSet("99_broken", "Broken", [q]), [0])
    assert plans[0].error == "grader error while preparing the question: ValueError: bug in the question set"
    report = grader.Report("x.ipynb", "99_broken")
    grader._grade_all(DeadKernel(), plans, grader.QuestionSet("99_broken", "Broken", [q]), 5, report)
    assert report.questions[0].status == "error"
    assert "bug in the question set" in report.questions[0].feedback()


# -------------------------------------------------------------------------- harness: answers that are classes


def _block_question() -> Question:
    """A question whose answer is an nn.Module class: the harness builds it, loads reference weights
    and returns its output, which the grader compares with the reference module's output."""

    def build(g):
        x = torch.randn(2, 3, generator=g)
        ref = torch.nn.Linear(3, 4)
        with torch.no_grad():
            ref.weight.copy_(torch.randn(4, 3, generator=g))
            ref.bias.copy_(torch.randn(4, generator=g))
        state = {k: v.clone() for k, v in ref.state_dict().items()}
        harness = Code(
            "lambda Block, x, w, b: (lambda m: (m.load_state_dict({'lin.weight': w, "
            "'lin.bias': b}), m(x).detach())[1])(Block(3, 4))"
        )
        return [
            Case(
                "output after loading reference weights",
                "Block",
                {"x": x, "w": state["weight"], "b": state["bias"]},
                ref(x).detach(),
                atol=1e-6,
                rtol=1e-6,
                hint="one nn.Linear called lin",
                harness=harness,
            )
        ]

    return Question("q1", "A block", ("Block",), build)


BLOCK_SOURCE = """
import torch
class Block(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.lin = torch.nn.Linear(i, o)
    def forward(self, x):
        return self.lin(x)
"""


def test_harness_checks_a_class_inline(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    register("97_harness", [_block_question()])
    try:
        ns: dict = {}
        exec(BLOCK_SOURCE, ns)
        assert check("q1", ns["Block"], assignment="97_harness").passed
        wrong: dict = {}
        exec(BLOCK_SOURCE.replace("return self.lin(x)", "return self.lin(x) + 0.5"), wrong)
        result = check("q1", wrong["Block"], assignment="97_harness")
        assert not result.passed and "values off" in capsys.readouterr().out
    finally:
        unregister("97_harness")


@pytest.mark.slow
def test_harness_runs_in_the_kernel_when_grading(tmp_path):
    from utils.grading import grade_notebook

    register("97_harness", [_block_question()])
    try:
        good = write(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BLOCK_SOURCE)]), tmp_path / "good.ipynb"
        )
        bad = write(
            nbformat.v4.new_notebook(
                cells=[
                    nbformat.v4.new_code_cell(
                        BLOCK_SOURCE.replace("torch.nn.Linear(i, o)", "torch.nn.Linear(i, o, bias=False)")
                    )
                ]
            ),
            tmp_path / "bad.ipynb",
        )
        assert grade_notebook(good, assignment="97_harness", timeout=60).score == 1
        report = grade_notebook(bad, assignment="97_harness", timeout=60)
        assert report.score == 0
        assert "Block" in report.questions[0].feedback() or report.questions[0].cases
    finally:
        unregister("97_harness")
