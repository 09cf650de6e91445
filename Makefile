# The README's commands, and the tools around them. Each target works from a fresh clone.
PY := .venv/bin/python

.PHONY: demo test test-unit test-fast lint bench bench-full clean

.venv:
	python3 -m venv .venv

demo: .venv
	.venv/bin/pip install -q -e .
	$(PY) -m pipeline run

test: .venv
	.venv/bin/pip install -q -e '.[test]'
	$(PY) -m pytest -n 2

test-unit: .venv
	.venv/bin/pip install -q -e '.[test]'
	$(PY) -m pytest tests/unit

test-fast: .venv
	.venv/bin/pip install -q -e '.[test]'
	$(PY) -m pytest -n 2 -m "not slow and not oracle"

lint: .venv
	.venv/bin/pip install -q -e '.[test,dev]'
	$(PY) -m ruff check pipeline recon tests benchmarks
	$(PY) -m mypy

bench: .venv
	.venv/bin/pip install -q -e '.[bench]'
	$(PY) -m benchmarks --quick

bench-full: .venv
	.venv/bin/pip install -q -e '.[bench]'
	$(PY) -m benchmarks --full

clean:
	rm -rf .venv pipeline_work test-artifacts
