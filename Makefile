# EmoDistill as a notebook report. `make help` lists the targets.
#
# Environment: a virtualenv in .venv. torch is installed first, at the exact pin read
# from pyproject.toml, so that nothing later resolves an open torch range to the newest
# CUDA build (several GB); then the package with its test extra, both held to the exact
# versions of constraints.txt. The stamp .venv/.installed-<sha1 of pyproject.toml and
# constraints.txt> marks a finished install: later runs reinstall nothing until either
# changes. conda users: see environment.yml.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PRESET ?= default
# Folds run in parallel, one process per core, each with one torch thread: small models
# gain little from a second thread, and OpenMP threads spin-wait badly on a shared machine.
# With GPUS (e.g. GPUS="0 1 2 3"), each running fold gets one of those GPUs and JOBS
# defaults to one per GPU. Cores are counted as emolib counts them (emolib/machine.py, standard
# library only): the CPUs this process may run on, capped by a container's CPU quota, which nproc
# does not see (docker run --cpus 4 on a 64-core host: 4, not 64).
GPUS ?=
CORES := $(shell $(PYTHON) -c 'import runpy; print(runpy.run_path("emolib/machine.py")["available_cores"]())' 2>/dev/null || nproc 2>/dev/null || echo 1)
JOBS ?= $(if $(strip $(GPUS)),$(words $(GPUS)),$(CORES))
# make test runs the suite in this many pytest-xdist workers: one per core, at most 4, as past that the
# notebooks' end-to-end tests (one worker runs them all, about 3 minutes: they share one tiny notebook run)
# set the time. TEST_JOBS=1 runs it in one process.
TEST_JOBS ?= $(shell n=$(CORES); echo $$(( n < 4 ? n : 4 )))
# Extra pip options for the torch install only, e.g. TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# (a CPU-only machine whose pip reaches only PyPI: there the Linux wheel of the pin is the CUDA build)
TORCH_ARGS ?=
# More options for `python -m emolib run` (make report), e.g. ARGS="--set training.num_threads=1" or ARGS=--force,
# and for `python -m emolib figures` (make figures), e.g. ARGS="--set distill.tau_linguistic=2"
ARGS ?=

# Every package at the exact version the test suite passed with (`make lock` writes it): pip installs
# within pyproject.toml's ranges, and this file fixes where in them. CONSTRAINTS= installs the newest
# versions the ranges allow instead (e.g. on a platform where a pinned version has no wheel).
CONSTRAINTS ?= constraints.txt
LOCK_VENV := .venv-lock

PY := $(VENV)/bin/python
INSTALL_SHA := $(shell $(PYTHON) -c 'import hashlib, sys; h = hashlib.sha1(" ".join(sys.argv[1:]).encode()); [h.update(open(f, "rb").read()) for f in sys.argv[1:]]; print(h.hexdigest()[:12])' pyproject.toml $(CONSTRAINTS) 2>/dev/null)
STAMP := $(VENV)/.installed-$(INSTALL_SHA)
TORCH_PIN := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')

# JupyterLab: double-clicking a .py file opens it with jupytext's notebook view (the
# "Jupytext Notebook" viewer) instead of the text editor. Set as an application-level
# override inside .venv, so the user's own JupyterLab settings stay untouched; sources
# are never paired to .ipynb files.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.DEFAULT_GOAL := help
.PHONY: help venv lock report figures test lab exercises clean distclean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-10s %s\n", $$1, $$2 }'
	@echo "  variables: PRESET=$(PRESET) (tiny, default, paper)  JOBS=$(JOBS) (folds in parallel)  TEST_JOBS=$(TEST_JOBS) (test workers)  GPUS=$(GPUS) (one per running fold)  ARGS=... (more options for python -m emolib run)"
	@echo "             CONSTRAINTS=$(CONSTRAINTS) (the exact versions make venv installs; CONSTRAINTS= for the newest within pyproject.toml's ranges)"

venv: $(STAMP) ## create .venv and install the package (torch pin first); a no-op when up to date

$(STAMP):
	@test -z "$(CONSTRAINTS)" -o -f "$(CONSTRAINTS)" || { echo "error: CONSTRAINTS=$(CONSTRAINTS): no such file (make lock writes \
	it; CONSTRAINTS= installs without it)" >&2; exit 1; }
	@test -n "$(TORCH_PIN)" || { echo "error: pyproject.toml has no exact \"torch==X\" pin" >&2; exit 1; }
	@v=$$($(PYTHON) -c 'import sys; print("Python %d.%d" % sys.version_info[:2])' 2>/dev/null) || v="not found"; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: PYTHON=$(PYTHON): \
	$$v; emolib needs Python 3.11+ (e.g. make $(or $(MAKECMDGOALS),venv) PYTHON=python3.11)" >&2; exit 1; }
	@# a venv cut off while it was made (Ctrl-C during ensurepip) has a python but no pip: made again
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --disable-pip-version-check $(TORCH_ARGS) '$(TORCH_PIN)' $(if $(CONSTRAINTS),-c '$(CONSTRAINTS)')
	$(PY) -m pip install --disable-pip-version-check -e '.[test]' $(if $(CONSTRAINTS),-c '$(CONSTRAINTS)')
	rm -f $(VENV)/.installed-*
	touch $@

# A fresh environment in $(LOCK_VENV) with the newest versions pyproject.toml allows, frozen into
# constraints.txt (torch stays pinned in pyproject.toml itself: its build tag, +cpu or not,
# depends on where pip finds it). Then `make test`, and commit constraints.txt if it passes.
lock: ## pin every package at the newest version pyproject.toml allows (rewrites constraints.txt)
	rm -rf $(LOCK_VENV)
	$(MAKE) --no-print-directory venv VENV=$(LOCK_VENV) CONSTRAINTS=
	{ echo "# Every package at the version the test suite passed with, for Python 3.11 on Linux x86_64:"; \
	  echo "# make venv installs exactly these (pip -c), so that a clone rebuilds the same figures."; \
	  echo "# Written by make lock ($$(date +%Y-%m-%d), $$($(LOCK_VENV)/bin/python --version)); make venv CONSTRAINTS= ignores it."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v -i '^torch=='; \
	} > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(LOCK_VENV)
	@git diff --stat -- constraints.txt 2>/dev/null || true

report: $(STAMP) ## every notebook for every fold, then the tables and figures (PRESET, JOBS, GPUS)
	$(PY) -m emolib run --preset $(PRESET) --jobs $(JOBS) $(if $(strip $(GPUS)),--gpus $(GPUS)) $(ARGS)

figures: $(STAMP) ## rebuild tables and figures from result files only (05_report, no training)
	$(PY) -m emolib figures --preset $(PRESET) $(ARGS)

test: $(STAMP) ## run the test suite (TEST_JOBS workers)
	EMOLIB_CONSTRAINTS='$(CONSTRAINTS)' $(PY) -m pytest -q $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadgroup)

$(LAB_OVERRIDES): | $(STAMP)
	mkdir -p $(@D)
	echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}' > $@

lab: $(STAMP) $(LAB_OVERRIDES) ## JupyterLab on 127.0.0.1, opening notebooks/ (.py files open as notebooks)
	$(PY) -m jupyter lab --no-browser --ip 127.0.0.1 $(ALLOW_ROOT) --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks

exercises: $(STAMP) ## course handouts from notebooks/exercises/ into runs/exercises/: without and with the solutions
	$(PY) -m emolib exercises

# Only the checkout's own folders: roots moved elsewhere with EMOLIB_DATA / EMOLIB_CACHE /
# EMOLIB_RUNS (e.g. a shared cache on a GPU server) are left alone.
clean: ## remove generated data, caches, runs and executed notebooks (keeps .venv and figures/)
	rm -rf data cache runs .pytest_cache

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV) $(LOCK_VENV)
