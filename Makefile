# The two commands a new user needs (see README): `make quickstart` and `make test`.
# Both set up .venv first; setup is idempotent and cheap when nothing changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test lint bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v prometheus >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

QUICKSTART_DATA := /tmp/mnv2-quickstart/data
QUICKSTART_OUT := /tmp/mnv2-quickstart/output

# A fresh run each time: the job resumes from checkpoints it finds in its output folder.
quickstart: setup
	test -d $(QUICKSTART_DATA)/train || $(BIN)/python -m mnv2.datasets digits $(QUICKSTART_DATA)
	rm -rf $(QUICKSTART_OUT)
	$(BIN)/mnv2 run examples/cpu-quickstart.yaml
	@if [ -f $(QUICKSTART_OUT)/training_report.csv ]; then $(BIN)/mnv2 report $(QUICKSTART_OUT); fi

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run_all
