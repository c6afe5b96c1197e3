# Two commands from a fresh clone: `make demo` runs the monitor, `make test` passes the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo run test unit tools install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing ccmon and its dependencies into $(VENV)…"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Real tools the tests use, from Debian: prometheus, promtool, alertmanager and amtool (prometheus,
# prometheus-alertmanager), headless Chromium with its driver (chromium, chromium-driver), and kcat.
tools:
	@missing=""; for t in prometheus promtool prometheus-alertmanager amtool chromium chromedriver kcat; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus, prometheus-alertmanager, chromium, chromium-driver and kcat (for$$missing)…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus prometheus-alertmanager chromium chromium-driver kcat >/dev/null; \
	  else \
	    echo "note:$$missing not found: install Debian's prometheus, prometheus-alertmanager, chromium, chromium-driver, kcat;"; \
	    echo "      until then those checks skip (and fail under CI=true)"; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/ccmon run --demo

run: $(STAMP)
	$(BIN)/ccmon run

# Two processes (pytest-xdist), each with its own broker and Redis, a test file per process at a time: most tests
# wait on group joins and restarts, so two halve the wall time even on two cores. TEST_PROCESSES=0 runs one.
TEST_PROCESSES ?= 2

test: $(STAMP) tools
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) .ccmon .pytest_cache .hypothesis test-artifacts
