# One command each on a fresh machine: every target creates .venv with pip if it is missing.
# `make simulate` needs only the numpy/scipy core; `make test` also installs torch and the test tools.
PY   := .venv/bin/python
CORE := .venv/.core-installed
FULL := .venv/.full-installed

.PHONY: simulate test figures lint bench clean

$(CORE): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(CORE)

$(FULL): $(CORE)
	$(PY) -m pip install -q -e ".[torch,test]"
	touch $(FULL)

simulate: $(CORE)
	$(PY) -m theory.simulate --augment-strength 2.0

test: $(FULL)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 tests

figures: $(CORE)
	$(PY) -m figures.make_all

lint: $(FULL)
	$(PY) -m ruff check dimcollapse theory empirical figures tests bench

bench: $(FULL)
	$(PY) bench/theory_bench.py
	$(PY) bench/train_throughput.py --backbone tiny --batch-size 64 --device cpu --threads 2

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis
