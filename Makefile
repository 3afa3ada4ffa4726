# Two commands matter: `make run` (the bot with demo data) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where `make run` serves: `make run PORT=8080`, `make run HOST=0.0.0.0 PORT=8080`.
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench bench-outbox install clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

.env:
	cp .env.example .env

run: $(STAMP) .env
	$(BIN)/python main.py db upgrade
	$(BIN)/python main.py demo load --if-empty
	$(BIN)/python main.py serve --demo --host $(HOST) --port $(PORT)

# The browser tests drive Debian's Chromium: installed here when it is missing and this
# machine can (root and apt-get); BROWSER_TESTS=skip skips them instead.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$BROWSER_TESTS" != skip ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium fonts-wqy-microhei fonts-noto-color-emoji >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 \
	         && apt-get install -y -qq chromium fonts-wqy-microhei fonts-noto-color-emoji >/dev/null 2>&1; } \
	    || echo "could not install chromium (the browser tests will say so)"; \
	fi

test: $(STAMP) browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-outbox: $(STAMP)
	$(BIN)/python bench/outbox.py

clean:
	rm -rf $(VENV) data
