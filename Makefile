# Two commands on a fresh machine: `make train` and `make test`. Each sets up
# .venv first (Python 3.11, versions pinned in requirements.lock).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup train test lint summary slurm

$(STAMP): requirements.lock setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[test,lint]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python -m adanet_jax.main --config=configs/digits.py --workdir=workdirs/digits

# The SLURM tests start a one-node cluster from Debian's slurm-wlm and munge
# (tests/slurm/cluster.sh); installed here when missing (needs root, as CI).
slurm:
	@command -v srun >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } || \
	  echo "make slurm: slurm-wlm and munge not installed (not root?); the SLURM tests will skip"

# Formatter and linter, in seconds, before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyink --check --quiet .

# Two workers, one test file each at a time (a file's module fixtures run once).
test: $(STAMP) slurm lint
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile
