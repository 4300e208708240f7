# Two commands do all set-up on a fresh machine:
#   make repro   create .venv, install, run the whole DVC pipeline (default preset: cpu)
#   make test    create the same environment and run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test repro lab clean-venv

install: $(STAMP)

# constraints.txt pins every package, torch to its CPU build; re-install when
# either file changes.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (uvlm)" >/dev/null
	touch $(STAMP)

# The end-to-end pipeline test (-m slow: one `dvc repro` of the tiny project, about 5 minutes,
# mostly one process at a time) runs beside the rest of the suite, which mostly uses one core too:
# on 2 cores the two take about as long as the slower alone. Each prints its slowest tests.
test: install
	@$(PY) -m pytest -q -m slow -p no:cacheprovider > .pytest-slow.log 2>&1 & slow=$$!; \
	$(PY) -m pytest -q -m "not slow"; rest=$$?; \
	wait $$slow; rc=$$?; echo "--- the end-to-end pipeline test (-m slow) ---"; cat .pytest-slow.log; \
	rm -f .pytest-slow.log; [ $$rest -eq 0 ] && [ $$rc -eq 0 ]

# The stages call papermill and the venv's kernel: put the venv first on PATH.
# JOBS=3 runs independent stages side by side (python -m uvlm.pipeline.repro); the default runs
# one at a time, as `dvc repro` itself does (the speed-up was measured on a GPU host only).
# TRAIN_JOBS=3 with a larger JOBS caps the train stages at 3 (--limit train=3).
JOBS ?= 1
TRAIN_JOBS ?=
repro: install
ifeq ($(JOBS),1)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro
else
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m uvlm.pipeline.repro --jobs $(JOBS) $(if $(TRAIN_JOBS),--limit train=$(TRAIN_JOBS))
endif

lab: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
