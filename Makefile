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

# the user story's two commands, then the same eval from random weights, the paired table and the
# path of the HTML report comparing the two runs (its last line)
demo: $(STAMP)
	$(VENV)/bin/biqabench pretrain qpt --backbone resnet50
	$(VENV)/bin/biqabench eval --head hyperiqa --weights qpt
	$(VENV)/bin/biqabench eval --head hyperiqa --weights random
	$(PY) -m biqabench.results.paired --head hyperiqa --backbone resnet50 --base random --other qpt

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache
