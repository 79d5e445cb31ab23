# nannyagent: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BPF2GO_CC ?= clang
BPF2GO_CFLAGS ?= -O2 -g -Wall -Werror
export BPF2GO_CC BPF2GO_CFLAGS
BIN := bin/nannyagent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nannyagent/nannyagent/internal/version.Version=$(VERSION)
# Packages with a //go:generate line for bpf2go.
GEN_PKGS = $(sort $(dir $(wildcard internal/catalog/*/gen.go)))
FUZZTIME ?= 5s

.PHONY: help generate generate-check build test fuzz bench lint clean docs

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

generate: ## regenerate the bpf2go bindings of every catalog entry (needs clang, llvm-strip)
	@command -v $(BPF2GO_CC) >/dev/null || { echo "generate: $(BPF2GO_CC) not found (apt-get install clang llvm)"; exit 1; }
	@printf '%s\n' $(GEN_PKGS) | xargs -P $$(nproc) -I{} sh -c 'cd {} && $(GO) generate ./ || { echo "generate failed in {}"; exit 255; }'

generate-check: generate ## regenerate and fail if the committed bindings differ
	@if [ -n "$$(git status --porcelain -- internal/catalog)" ]; then \
		echo "generated bindings are stale; run 'make generate' and commit:"; \
		git status --porcelain -- internal/catalog; exit 1; fi
	@echo "generated bindings match their C sources"

build: ## build bin/nannyagent (CGO_ENABLED=0, no clang needed)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nannyagent

test: lint ## run every test (BPF tests need root; NANNYAGENT_REQUIRE_BPF=1 makes skips failures) and a short fuzz run
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build ./...
	$(GO) test -count=1 ./...
	$(MAKE) --no-print-directory fuzz

fuzz: ## run each fuzz target for FUZZTIME (default 5s)
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; \
			before=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
			if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/nanny-fuzz.log 2>&1; then \
				cat /tmp/nanny-fuzz.log; \
				after=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
				if [ "$$after" != "$$before" ]; then echo "fuzz $$f found a failing input (saved in $$dir/testdata/fuzz/$$f)"; exit 1; fi; \
				echo "fuzz $$f: the fuzzing engine failed without a failing input; running it once more"; \
				$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
			fi; \
		done; done

bench: ## benchmarks against bpftrace, side by side (root)
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 1 ./internal/catalog/bench/

lint: ## gofmt, go vet and shellcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v shellcheck >/dev/null || { echo "lint: shellcheck not found (apt-get install shellcheck)"; exit 1; }
	shellcheck install.sh

clean: ## remove build output
	rm -rf bin

.PHONY: vmtest
vmtest: ## run the BPF tests as root in the kernel matrix (vmtests/kernels.txt) under qemu; KERNEL=6.1 for one kernel, VMTEST_FLAGS=-dry-run to print the commands
	$(GO) run ./vmtests $(if $(KERNEL),-kernel $(KERNEL)) $(VMTEST_FLAGS)

docs: ## regenerate the generated parts of docs/: the catalog reference (EBPF_MONITORING.md) and the config keys (CONFIGURATION.md)
	$(GO) test ./internal/catalog/registry -run TestCatalogDocsUpToDate -update-docs -count=1
	$(GO) test ./internal/config -run TestConfigDocsUpToDate -update-docs -count=1
