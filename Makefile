# Set-up is two commands on a fresh machine (Python 3.8+ with venv; no GPU needed):
#   make demo   generate data if none, train, export to ONNX, classify an image into out.jpg
#   make test   run the test suite
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: install demo test bench clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./demo.sh

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.train_recipes
	$(PY) -m bench.classify_images
	$(PY) -m bench.classify_throughput

clean-demo:
	rm -rf data/synthetic data/synthetic_download models/demo out.jpg
