# Two commands on a fresh machine:  make demo   (pretrain QPT, evaluate HyperIQA with it against bnstats and random)
#                                   make test   (the test suite; what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# the newest run folder whose id holds $(1) (run ids start with their time: the last one sorts last)
RUNS = $(or $(BIQABENCH_RESULTS),results)/runs
newest_run = $$(ls -d $(RUNS)/*-eval-$(1)-* | tail -n 1)
REPORT = $(or $(BIQABENCH_RESULTS),results)/reports/hyperiqa-resnet50-bnstats-vs-qpt.html

# the user story's two commands; then the fair baseline (bnstats: the same photos at the same sizes, BatchNorm
# statistics measured, no learning) and random weights through the same eval; the paired table against bnstats
# and its HTML report
demo: $(STAMP)
	$(VENV)/bin/biqabench pretrain qpt --backbone resnet50
	$(VENV)/bin/biqabench eval --head hyperiqa --weights qpt
	$(VENV)/bin/biqabench pretrain bnstats --backbone resnet50
	$(VENV)/bin/biqabench eval --head hyperiqa --weights bnstats
	$(VENV)/bin/biqabench eval --head hyperiqa --weights random
	$(VENV)/bin/biqabench results compare $(call newest_run,hyperiqa-bnstats-resnet50) $(call newest_run,hyperiqa-random-resnet50) $(call newest_run,hyperiqa-qpt-resnet50)
	$(VENV)/bin/biqabench report $(call newest_run,hyperiqa-bnstats-resnet50) $(call newest_run,hyperiqa-random-resnet50) $(call newest_run,hyperiqa-qpt-resnet50) -o $(REPORT)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache
