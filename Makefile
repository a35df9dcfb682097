# `make serve` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/mandate/v1/*.proto)
STUBS := server/mandate/v1/.generated

.PHONY: serve test proto lint bench bench-large migrate policy-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(STUBS): $(STAMP) $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=server --pyi_out=server \
		--grpc_python_out=server $(PROTOS)
	touch $(STUBS)

proto: $(STAMP)
	rm -f $(STUBS)
	$(MAKE) $(STUBS)

migrate: $(STUBS)
	$(BIN)/mandate migrate

serve: migrate
	$(BIN)/mandate serve

test: $(STUBS)
	$(BIN)/python -m pytest -q

policy-test: $(STUBS)
	$(BIN)/mandate policy test $(if $(MANDATE_POLICY_DIR),--policy-dir $(MANDATE_POLICY_DIR),) policies/tests

lint: $(STUBS)
	$(BIN)/ruff check server tests bench

bench: $(STUBS)
	$(BIN)/python -m bench.run --dataset $(or $(DATASET),small)

bench-large: $(STUBS)
	$(BIN)/python -m bench.run --dataset large

clean:
	rm -rf $(VENV) var server/mandate/v1/*_pb2*.py* $(STUBS)
