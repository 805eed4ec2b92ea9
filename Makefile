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
	$(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=30

benchmarks: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/label_efficiency.py --sets digits --seeds 10 --batch 10 --budget 400 --strategies margin,batch,uncertainty,entropy,random --out benchmarks/results/label_efficiency_digits.json
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/label_efficiency.py --sets fashion --seeds 10 --batch 10 --budget 800 --strategies margin,batch,random --out benchmarks/results/label_efficiency_fashion.json
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/label_efficiency.py --sets spam --seeds 10 --batch 10 --budget 300 --strategies margin,batch,uncertainty,entropy,random --out benchmarks/results/label_efficiency_spam.json
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/label_efficiency.py --sets breast-cancer --seeds 20 --batch 5 --budget 150 --strategies margin,batch,uncertainty,entropy,random --out benchmarks/results/label_efficiency_breast-cancer.json
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/label_efficiency.py --sets spam-corpus --seeds 10 --batch 10 --budget 800 --strategies margin,batch,random --out benchmarks/results/label_efficiency_spam-corpus.json
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/autolabel_accuracy.py --labels 1000 --labels-for breast-cancer=450,fashion=2000 --fashion-items 10000

clean:
	rm -rf $(VENV) build *.egg-info
