# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: simulate demo test lint bench load redis-server chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is required by the test suite and is not installed." >&2; \
	    echo "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run make test again." >&2; \
	    exit 1; \
	  fi; }

# The browser tests drive Debian's Chromium with Playwright (executable_path; Playwright's own
# browser download is neither needed nor possible on a closed network).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "chromium missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is required by the browser tests and is not installed." >&2; \
	    echo "Install it (Debian/Ubuntu: sudo apt-get install chromium) and run make test again." >&2; \
	    exit 1; \
	  fi; }

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy --strict src

test: $(VENV)/.installed redis-server chromium lint
	GUARDRAIL_REQUIRE_REDIS=1 GUARDRAIL_REQUIRE_BROWSER=1 $(BIN)/pytest

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/streaming.py
	$(BIN)/python benchmarks/risk_memory.py
	$(BIN)/python benchmarks/capture.py

# uvicorn workers on loopback under wrk (where installed; else a Python generator), 1 and 4
# workers, every configuration alternated; options: .venv/bin/python benchmarks/load.py --help
load: $(VENV)/.installed redis-server
	$(BIN)/python benchmarks/load.py

simulate: $(VENV)/.installed
	$(BIN)/guardrail simulate --seed 1

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
