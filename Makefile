# QuirkScope: `make demo` runs the whole job end to end, `make test` runs the tests. Both create .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-reliability reliability-figures venv clean

# The test servers have no Kerberos. libpq otherwise tries GSSAPI encryption first (gssencmode=prefer), and its
# Kerberos setup is not thread-safe. A test process crashed once with a segfault in psycopg2.connect on the
# reaper's thread (make test, stop 29); that probe is the known cause of such crashes (psycopg/psycopg#1213), though
# it was not proven here. A PGGSSENCMODE already set wins.
export PGGSSENCMODE ?= disable

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,redis]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/quirkscope demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q -m "not reliability"

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not reliability"

# faults with real servers and worker processes, and the bounded load test (docs/reliability.md)
test-reliability: $(STAMP)
	$(PY) -m pytest -q -m reliability

reliability-figures: $(STAMP)
	$(PY) tests/benchmarks/reliability_figures.py --write docs/reliability.md

clean:
	rm -rf demo-out .pytest_cache
