# Everything installs from nothing into .venv through constraints.txt (the CPU torch stays put).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-score seeds test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

# The main job: a robustness-vs-sparsity sweep on digits (7-12 minutes on 2 cores); rerunning reuses every cell.
demo: $(STAMP)
	$(PY) -m robustprune sweep --config sweeps/demo.toml --executor process --workers 2 --out reports/demo-sweep

# One model: train a small CNN on digits (cached) and score it with the fast battery at Linf eps 0.1.
seeds: $(STAMP)
	$(PY) -m robustprune sweep --config sweeps/seeds.toml --executor process --workers 2 --out reports/seeds-sweep

demo-score: $(STAMP)
	$(PY) -m robustprune demo --out reports/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check robustprune tests bench

bench: $(STAMP)
	$(PY) bench/battery_overhead.py
	$(PY) bench/defense_epoch_cost.py
	$(PY) bench/health_overhead.py
	$(PY) bench/fast_vs_autoattack.py

clean:
	rm -rf $(VENV) build *.egg-info
