# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Installs come from constraints/lock.txt (the exact releases CI tested); `make test-latest` tries the newest.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := constraints/lock.txt
LATEST ?= .venv-latest

.PHONY: setup demo test bench zoo info test-latest setup-latest lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK) tools/locked_install.py
	$(PYTHON) -m venv $(VENV)
	$(PY) tools/locked_install.py $(LOCK) --quiet torch==2.13.0
	$(PY) tools/locked_install.py $(LOCK) --quiet -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/universality demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

zoo: setup
	$(VENV)/bin/universality zoo

info: setup
	$(PY) -m universality.about

# The newest releases (torch stays pinned), in a venv of their own: the key packages are upgraded past the
# caps in pyproject.toml on purpose, so that a new transformers is tried here before users meet it.
NEWEST := transformers tokenizers safetensors numpy scipy numba pot matplotlib tqdm pyyaml

setup-latest: $(LATEST)/.installed

$(LATEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[dev]'
	$(LATEST)/bin/python -m pip install --quiet --upgrade $(NEWEST)
	touch $@

test-latest: setup-latest
	$(LATEST)/bin/python -m universality.about
	UNIVERSALITY_UNLOCKED=1 $(LATEST)/bin/python -m pytest

# Rewrite the lock from the newest releases (run after `make test-latest` passes).
lock: setup-latest
	{ sed -n '/^#/p' $(LOCK); $(LATEST)/bin/python -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info .pytest_cache
