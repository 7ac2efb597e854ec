# step-operator: `make test` is what CI runs (.ci/run) and what the README tells you to run.
SHELL := /bin/bash
CARGO ?= cargo
E2E_THREADS ?= 4
# Where cargo puts binaries (honours CARGO_TARGET_DIR, as cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: all build release fmt fmt-check lint unit generate e2e-build e2e-up e2e-down e2e test demo bench clean

all: build

build:
	$(CARGO) build --bin step-operator

# The same build the Dockerfile runs.
release:
	$(CARGO) build --release --locked --bin step-operator

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@# --all-targets leaves out test = false targets.
	$(CARGO) clippy --locked -p e2e --test podcert_refresh -- -D warnings

unit:
	$(CARGO) test --locked
	$(CARGO) test --locked -p e2e --bin bench

# Regenerates the CRD YAML from the Rust types: crds/, the chart's copy, and the kustomize base
# (kustomize cannot load files above config/). A unit test fails when crds/ or the chart's copy is
# stale; the chart e2e test compares config/crd/bases with crds/.
generate: build
	$(TARGET_DIR)/debug/step-operator crd --out-dir crds --out-dir charts/step-operator/files/crds --out-dir config/crd/bases

e2e-build:
	e2e/build-infra.sh >/dev/null

e2e-up:
	e2e/cluster.sh up

e2e-down:
	e2e/cluster.sh down

# Brings the local cluster up (its control plane and node, sealed in a network namespace), builds
# our image from the release binary into the node, runs the e2e crate in there, and always tears
# it down. The test binaries are built first, outside: nothing in the namespace reaches a registry.
# The kubelet's refresh of a pod certificate takes 10-17 minutes to come: its two phases
# (e2e/tests/podcert_refresh.rs) run first and last, and (warm) the release build, the image and
# the rest of the suite run while the kubelet waits.
E2E_REFRESH := --test podcert_refresh -- --exact
e2e: build
	@# Cold, the Go components are still building (.ci/run starts them first): build the release
	@# binary meanwhile rather than after.
	@e2e/build-infra.sh --ready || $(CARGO) build --release --locked --bin step-operator
	@e2e/cluster.sh up
	@$(CARGO) test --locked -p e2e --no-run
	@$(CARGO) test --locked -p e2e --test podcert_refresh --no-run
	@rc=0; image=; \
	  run() { e2e/cluster.sh exec env STEP_OPERATOR_BIN=$(TARGET_DIR)/debug/step-operator E2E_OPERATOR_IMAGE=$$image \
	      $(CARGO) test --locked -p e2e "$$@"; }; \
	  run $(E2E_REFRESH) podcert_kubelet_refresh_1_pod_due_for_refresh || rc=$$?; \
	  if $(CARGO) build --release --locked --bin step-operator && \
	     image=$$(e2e/cluster.sh image $(TARGET_DIR)/release/step-operator); then \
	    run --no-fail-fast -- --test-threads=$(E2E_THREADS) || rc=$$?; \
	    run $(E2E_REFRESH) podcert_kubelet_refresh_2_happens_before_expiry || rc=$$?; \
	    e2e/cluster.sh exec e2e/check-secrets.sh || rc=1; \
	  else rc=1; fi; \
	  if [ $$rc -ne 0 ]; then e2e/keep-logs.sh; fi; \
	  e2e/cluster.sh down; exit $$rc

test: fmt-check lint unit e2e

demo: release
	STEP_OPERATOR_RELEASE_BIN=$(TARGET_DIR)/release/step-operator e2e/demo.sh

# Benchmarks against step-ca's ceiling, step-issuer and autocert (not part of `make test`).
# Builds --release first; BENCH_ARGS="--requests 50 ..." for small runs. See e2e/BENCHMARKS.md.
bench:
	BENCH_ARGS="$(BENCH_ARGS)" CARGO="$(CARGO)" e2e/bench.sh

clean:
	e2e/cluster.sh down || true
	$(CARGO) clean
