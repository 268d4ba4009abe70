# Thin wrappers around the projects' entry points. Every target bootstraps .venv itself, so `make test` or
# `make reproduce-fpt` is a valid first command on a fresh clone.

PROJECTS := fpt_plus spmix fedlppa aslseg pamsr prior joinedtrans octa_iqa yolocurvseg
PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=
# `make test` runs the suite on TEST_WORKERS pytest-xdist processes, one project per worker at a time (conftest.py
# groups tests by top-level folder), one torch thread each so two workers do not oversubscribe two cores.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test lint report clean $(addprefix test-,$(PROJECTS)) $(addprefix reproduce-,$(PROJECTS)) \
        $(addprefix bench-,$(PROJECTS)) $(addsuffix -all,$(addprefix reproduce-,$(PROJECTS))) \
        reproduce-fpt reproduce-fpt-all bench-fpt test-fpt

help:
	@echo "make install | test | test-<project> | lint | reproduce-<project> | bench-<project> | report | clean"
	@echo "projects: $(PROJECTS)   (short alias: fpt = fpt_plus)"

install: $(STAMP)

# The contrib build of OpenCV (cv2.saliency, used by spmix) and the headless build that albumentations requires
# both provide the `cv2` module; re-installing contrib last, at the same version, makes it the one that is imported.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON_BOOT) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev,all]'
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall \
	  "opencv-contrib-python-headless==$$($(PY) -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
	$(PY) -c "import cv2; cv2.saliency.StaticSaliencyFineGrained_create()"
	touch $@

test: $(STAMP)
	$(if $(filter 0,$(TEST_WORKERS)),,OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}) $(PY) -m pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

$(addprefix test-,$(PROJECTS)): test-%: $(STAMP)
	$(PY) -m pytest $* -m "not gpu" $(PYTEST_ARGS)

# ruff; the import architecture (import-linter contracts in pyproject.toml); repeated code across the projects
# (pylint's duplicate-code, configured in pyproject.toml). Each fails the target on a violation.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pylint --rcfile=pyproject.toml --jobs=1 common $(PROJECTS)

# A project is implemented once it has reproduce.py / bench.py; until then the target says so and fails.
# `make reproduce-fpt DATA=/data/messidor2 CONFIG=configs/messidor2.yaml` runs the paper setting on real data;
# `reproduce-<project>-all` adds every baseline and seed the project offers.
REPRO_ARGS = $(if $(CONFIG),--config $(CONFIG)) $(if $(DATA),--data-root $(DATA)) $(ARGS)

$(addprefix reproduce-,$(PROJECTS)): reproduce-%: $(STAMP)
	@test -f $*/reproduce.py || { echo "$*: not implemented yet (planned, see $*/README.md)"; exit 1; }
	cd $* && $(PY) reproduce.py $(REPRO_ARGS)

$(addsuffix -all,$(addprefix reproduce-,$(PROJECTS))): reproduce-%-all: $(STAMP)
	@test -f $*/reproduce.py || { echo "$*: not implemented yet (planned, see $*/README.md)"; exit 1; }
	cd $* && $(PY) reproduce.py --all $(REPRO_ARGS)

$(addprefix bench-,$(PROJECTS)): bench-%: $(STAMP)
	@test -f $*/bench.py || { echo "$*: no benchmark yet (planned, see $*/README.md)"; exit 1; }
	cd $* && $(PY) bench.py $(ARGS)

reproduce-fpt: reproduce-fpt_plus
reproduce-fpt-all: reproduce-fpt_plus-all
bench-fpt: bench-fpt_plus
test-fpt: test-fpt_plus

report: $(STAMP)
	$(PY) -m common.report $(PROJECTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
