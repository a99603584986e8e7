# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On a machine without an NVIDIA driver, torch stays pinned to the local CPU build;
# with CUDA present, pip's default (CUDA) build of the same version is used.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
ifeq ($(HAS_CUDA),1)
  PIN :=
else
  PIN := PIP_CONSTRAINT=$(CURDIR)/constraints/cpu.txt
endif

.PHONY: setup demo test bench zoo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	python3 -m venv $(VENV)
	$(PIN) $(PY) -m pip install --quiet torch==2.13.0
	$(PIN) $(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/universality demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

zoo: setup
	$(VENV)/bin/universality zoo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
