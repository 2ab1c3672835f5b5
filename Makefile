# The README's two commands: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := .ductile-demo
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test bench diagrams clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

$(DEMO): | $(STAMP)
	$(BIN)/ductile config init --dir $(DEMO)

run: $(STAMP) $(DEMO)
	@listen=$$($(BIN)/ductile config get api.listen --config $(DEMO)) && \
	echo "API: http://$$listen  (token: the 0600 file $(DEMO)/api-token; it lives in the vault)" && \
	echo "Try: curl -s -H \"Authorization: Bearer \$$(cat $(DEMO)/api-token)\" \\" && \
	echo "       -d '{\"payload\":{\"hello\":\"world\"},\"sync\":true}' http://$$listen/plugins/echo/run"
	exec $(BIN)/ductile system start --config $(DEMO)

test: $(TSTAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q tests property-tests

bench: $(TSTAMP)
	DUCTILE_BENCH=1 $(BIN)/python -m pytest -q -s tests/bench

diagrams: $(STAMP)
	$(BIN)/python -m ductile.boot.diagram --write

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
