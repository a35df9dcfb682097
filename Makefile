# `make serve` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/mandate/v1/*.proto)
STUBS := server/mandate/v1/.generated

.PHONY: serve test test-package proto lint bench bench-large bench-import migrate policy-test clean

# The editable install runs the build hook of setup.py, which generates the stubs as below.
# constraints.txt pins the versions the service is tested with; pyproject.toml gives ranges.
$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
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

# Two workers: the suite waits on servers, subprocesses and PostgreSQL as much as it computes.
test: $(STUBS)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

# Only the outside view (also part of `test`): build the wheel, install it into a fresh
# virtualenv, run an outside project and the ephemeral server from there.
test-package: $(STUBS)
	$(BIN)/python -m pytest -q tests/public/test_package.py

policy-test: $(STUBS)
	$(BIN)/mandate policy test $(if $(MANDATE_POLICY_DIR),--policy-dir $(MANDATE_POLICY_DIR),) policies/tests

lint: $(STUBS)
	$(BIN)/ruff check server tests bench examples setup.py

bench: $(STUBS)
	$(BIN)/python -m bench.run --dataset $(or $(DATASET),small) --store $(or $(STORE),sqlite) $(if $(PROCESSES),--processes $(PROCESSES),)

bench-large: $(STUBS)
	$(BIN)/python -m bench.run --dataset large

# Import and export rates (records/s) on SQLite and PostgreSQL: RECORDS=1000000 for the 1M figure.
bench-import: $(STUBS)
	$(BIN)/python -m bench.data --records $(or $(RECORDS),200000) $(if $(STORE),--store $(STORE),)

clean:
	rm -rf $(VENV) var build server/mandate/v1/*_pb2*.py* $(STUBS)
