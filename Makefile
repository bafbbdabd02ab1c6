# Two commands on a fresh machine:  make demo   (pretrain QPT, then evaluate HyperIQA with it)
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
REPORT = $(or $(BIQABENCH_RESULTS),results)/reports/hyperiqa-resnet50-random-vs-qpt.html

# the user story's two commands, then the same eval from random weights, the paired table and the
# path of the HTML report comparing the two runs (its last line)
demo: $(STAMP)
	$(VENV)/bin/biqabench pretrain qpt --backbone resnet50
	$(VENV)/bin/biqabench eval --head hyperiqa --weights qpt
	$(VENV)/bin/biqabench eval --head hyperiqa --weights random
	$(VENV)/bin/biqabench results compare $(call newest_run,hyperiqa-random-resnet50) $(call newest_run,hyperiqa-qpt-resnet50)
	$(VENV)/bin/biqabench report $(call newest_run,hyperiqa-random-resnet50) $(call newest_run,hyperiqa-qpt-resnet50) -o $(REPORT)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache
