# Two commands on a fresh machine: `make train` and `make test`. Each sets up
# .venv first (Python 3.11, versions pinned in requirements.lock).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup train test summary

$(STAMP): requirements.lock setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python -m adanet_jax.main --config=configs/digits.py --workdir=workdirs/digits

test: $(STAMP)
	$(VENV)/bin/python -m pytest
