# Runnel: `make run` starts a broker on 127.0.0.1:9092; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := target/release/runnel
# Debian packages: libclang for the rocksdb crate's bindgen and protoc for the
# etcd-client crate's gRPC code (every build); kcat, prometheus, openssl (test
# certificates) and etcd (the cluster tests' metadata store) for the compat tests.
BUILD_PACKAGES := libclang-dev protobuf-compiler
TEST_PACKAGES := kcat prometheus openssl etcd-server etcd-client

.PHONY: run build test deps apt-deps apt-test-deps apt-install py-deps unit compat bench chaos clean fmt lint fuzz fuzz-tools fuzz-slice
# make fuzz: seconds per cargo-fuzz target, and for the end-to-end wire fuzzer.
FUZZ_SECONDS ?= 300
WIRE_FUZZ_SECONDS ?= 600
CARGO_FUZZ_VERSION := 0.13.2

run: apt-deps build
	$(BIN) --config config/server.properties

build: apt-deps
	cargo build --release

apt-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BUILD_PACKAGES)"

apt-test-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BUILD_PACKAGES) $(TEST_PACKAGES)"

# Installs whichever of $(PACKAGES) are missing (apt-get update first, as on a fresh machine).
apt-install:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

py-deps: $(VENV)/.installed

$(VENV)/.installed: compat-tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r compat-tests/requirements.txt
	touch $@

deps: apt-test-deps py-deps

unit: apt-deps
	cargo test --release

compat: build apt-test-deps py-deps
	RUNNEL_BIN=$(abspath $(BIN)) $(VENV)/bin/pytest -q compat-tests

test: deps
	cargo build --release
	cargo test --release
	$(MAKE) --no-print-directory fuzz-slice
	RUNNEL_BIN=$(abspath $(BIN)) $(VENV)/bin/pytest -q compat-tests

# cargo-fuzz (libFuzzer needs the nightly toolchain the machine image has).
fuzz-tools:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

# A short slice of every cargo-fuzz target (make test); the wire fuzzer's slice
# is compat-tests/test_wire_fuzz.py.
fuzz-slice: fuzz-tools
	FUZZ_SECONDS=20 bash fuzz/run.sh

fuzz: build py-deps fuzz-tools
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh
	RUNNEL_BIN=$(abspath $(BIN)) $(PY) compat-tests/wire_fuzz.py --seconds $(WIRE_FUZZ_SECONDS)

# Benchmark (bench/run.sh): runnel vs the nullbroker ceiling through librdkafka; prints a table.
# Needs a C compiler and make for librdkafka's first build (rdkafka crate, from source).
bench: apt-deps apt-test-deps py-deps
	bash bench/run.sh

# Fault soak of a 3-broker cluster (compat-tests/chaos.py): random kill -9 / SIGSTOP under
# idempotent acks=all load, then the acknowledged set is checked. make test runs 5 cycles.
CHAOS_CYCLES ?= 100
chaos: build apt-test-deps py-deps
	RUNNEL_BIN=$(abspath $(BIN)) $(PY) compat-tests/chaos.py --cycles $(CHAOS_CYCLES)

fmt:
	cargo fmt

lint:
	cargo fmt --check
	cargo clippy --release -- -D warnings

clean:
	cargo clean
	rm -rf $(VENV) data fuzz/target
