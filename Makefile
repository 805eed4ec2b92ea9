# `make run` and `make test` set everything up themselves on a fresh machine.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PORT    ?= 8501
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint chromium postgres benchmarks clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e ".[test,embeddings]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/groundwork serve --port $(PORT)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The distributed-study tests start their own throwaway PostgreSQL server.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) chromium postgres lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

benchmarks: $(STAMP)
	$(PYTHON) benchmarks/label_efficiency.py --seeds 2 --batch 20 --budget 500
	$(PYTHON) benchmarks/autolabel_accuracy.py

clean:
	rm -rf $(VENV) build *.egg-info
