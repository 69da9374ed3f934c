# gather: run `make help` for the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GO      ?= go
BIN     := $(CURDIR)/.bin
TOOLMOD := -modfile=$(CURDIR)/tools/go.mod
LINTMOD := -modfile=$(CURDIR)/tools/lint/go.mod
GOTEST_FLAGS ?=

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: demo
demo: build ## Run 4 index shards and the proxy on 127.0.0.1 (QS API :7070, admin :9090)
	$(BIN)/gather demo

.PHONY: demo-traced
demo-traced: build ## make demo, exporting every query's trace to a local Jaeger (run make jaeger first)
	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_INSECURE=true $(BIN)/gather demo

# gather cluster needs etcd: as root with apt-get, demo-cluster installs Debian's etcd-server, as
# .ci/run does; otherwise gather cluster says how to get it. CLUSTER_FLAGS adds flags, e.g.
# --synthetic (no index to build) or --base-port 7100 (fixed ports).
CLUSTER_FLAGS ?=

.PHONY: demo-cluster
demo-cluster: build ## Run etcd, 4 shards x 2 replicas and 2 proxies as processes on 127.0.0.1, shards registered in etcd (CLUSTER_FLAGS)
	@if ! command -v etcd >/dev/null && [ -z "$${GATHER_ETCD:-}" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing etcd-server (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; fi
	$(BIN)/gather cluster $(CLUSTER_FLAGS)

.PHONY: jaeger
jaeger: ## Run Jaeger v2 all-in-one on 127.0.0.1 (query API on :16686, no UI: see gather trace); builds it once (~4 min)
	scripts/jaeger.sh

.PHONY: test
test: ## Run the whole test suite with the race detector
	$(GO) test -race -count=1 $(GOTEST_FLAGS) ./...

.PHONY: build
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build: ## Build the gather binary into .bin/
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/gather ./cmd/gather

# Code generators and buf, built from the versions pinned in tools/go.mod.
$(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: tools/go.mod tools/go.sum
	$(GO) build $(TOOLMOD) -o $(BIN)/ github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

# buf/validate/validate.proto, which the protos import for their protovalidate rules. buf's
# registry (buf.build) is out of reach, so it comes from the Go module proxy: the module
# github.com/bufbuild/protovalidate, at the version pinned in tools/go.mod (checked against
# tools/go.sum), copied into .bin/protovalidate, the second module of the buf.yaml workspace.
PROTOVALIDATE_PROTO := $(BIN)/protovalidate/buf/validate/validate.proto

$(PROTOVALIDATE_PROTO): tools/go.mod tools/go.sum
	@$(GO) mod download $(TOOLMOD) github.com/bufbuild/protovalidate || { \
		echo "github.com/bufbuild/protovalidate must be required in tools/go.mod (go mod tidy drops it: no Go package imports it)"; exit 1; }
	@src=$$($(GO) list $(TOOLMOD) -m -f '{{.Dir}}' github.com/bufbuild/protovalidate) && \
		mkdir -p $(@D) && install -m 0644 "$$src/proto/protovalidate/buf/validate/validate.proto" $@

$(BIN)/golangci-lint: tools/lint/go.mod tools/lint/go.sum
	$(GO) build $(LINTMOD) -o $(BIN)/ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(PROTOVALIDATE_PROTO) ## Regenerate gen/ (and the reflection image) from proto/
	rm -rf gen
	$(BIN)/buf generate
	$(BIN)/buf build -o internal/apidesc/gather.binpb

.PHONY: checkgenerate
checkgenerate: generate ## Fail if gen/ differs from what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen internal/apidesc)" ]; then \
		echo "gen/ is out of date: run 'make generate' and commit the result"; \
		git status --porcelain -- gen internal/apidesc; exit 1; fi

.PHONY: lint
lint: $(BIN)/buf $(BIN)/golangci-lint $(PROTOVALIDATE_PROTO) check-kubernetes ## buf lint + format check, go vet, golangci-lint, the Kubernetes manifests
	$(BIN)/buf lint
	$(BIN)/buf format proto --diff --exit-code
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...
	$(GO) -C $(K8SCHECK) vet ./...
	cd $(K8SCHECK) && $(BIN)/golangci-lint run ./...

# deploy/kubernetes/check is a module of its own, so that gather's module does not depend on
# kustomize and k8s.io/api. Its tests render every overlay offline, decode each object strictly
# and check the manifests against the gather binary's flags and cmd/gather's drains.
K8SCHECK := deploy/kubernetes/check

.PHONY: check-kubernetes
check-kubernetes: build ## Render deploy/kubernetes's overlays (offline) and check them against the gather binary
	GATHER_BIN=$(BIN)/gather $(GO) -C $(K8SCHECK) test -count=1 ./...

.PHONY: fuzz
fuzz: ## Run each fuzz test for a short while (FUZZTIME=30s)
	$(GO) test -run='^$$' -fuzz=FuzzTree -fuzztime=$${FUZZTIME:-30s} ./internal/merge/
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$${FUZZTIME:-30s} ./internal/proxy/
	@# Each input runs real loopback shards: minimizing a new input would take the default 60s.
	$(GO) test -run='^$$' -fuzz=FuzzHostileShards -fuzztime=$${FUZZTIME:-30s} -fuzzminimizetime=5s ./internal/proxy/
	$(GO) test -run='^$$' -fuzz=FuzzCleanText -fuzztime=$${FUZZTIME:-30s} ./internal/fanout/

# make bench writes its results here: gobench.txt (go test -bench), report.md, report.json,
# proxy-cpu.pprof (the proxy at saturation, fan-out 4, top_k 10: go tool pprof -top FILE),
# tail.png (the tail scenario's percentile plot, linked from report.md) and cost.png (the proxy's
# CPU per query against fan-out, with the fitted cost model). BENCHSUITE_FLAGS chooses the rest,
# e.g. --rounds 5, --fan-outs 4,16,64, --parts core.
BENCH_OUT ?= $(BIN)/bench
BENCHSUITE_FLAGS ?= --quiet-wait 2m

.PHONY: bench
bench: build ## Go benchmarks, gather vs a raw hop vs a naive fan-out (N 1-128, 3 rounds), cost model, tail, targets (~20 min; BENCH_OUT, BENCHSUITE_FLAGS)
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchmem ./internal/merge/ ./internal/proxy/ ./internal/faulttest/ \
		| tee $(BENCH_OUT)/gobench.txt
	$(BIN)/gather benchsuite --gobench $(BENCH_OUT)/gobench.txt --markdown $(BENCH_OUT)/report.md \
		--json $(BENCH_OUT)/report.json --cpuprofile $(BENCH_OUT)/proxy-cpu.pprof --plot $(BENCH_OUT)/tail.png --cost-plot $(BENCH_OUT)/cost.png $(BENCHSUITE_FLAGS)

.PHONY: clean
clean: ## Remove built binaries
	rm -rf $(BIN)
