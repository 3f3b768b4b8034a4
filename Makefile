# strata. `make help` lists the targets. Tests mount for real: run them as root.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)

# Packages with no FUSE server in them: cheap to run under the race detector.
PURE := ./whiteout/... ./layers/... ./internal/mounts/... ./internal/depcheck/... ./internal/beneath/... \
        ./internal/cgroups/... ./internal/fusedev/...

# sudo, unless we are root already.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help build test race bench lint demo clean

help:
	@echo "make build   build bin/strata"
	@echo "make test    go vet, every test (mounts: needs root), -race on the pure packages"
	@echo "make bench   every micro-benchmark, once (strata next to kernel overlayfs; needs root)"
	@echo "             (the side-by-side report of every system: bin/strata bench --quick)"
	@echo "make lint    gofmt, go vet, and golangci-lint if it is installed"
	@echo "make demo    build, then run a container on an image built from this host, and"
	@echo "             show what a union does, step by step (needs root; no download)"

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/strata ./cmd/strata

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	@$(MAKE) --no-print-directory race

# The race detector needs cgo.
race:
	@if [ "$$($(GO) env CGO_ENABLED)" = 1 ]; then \
		echo "$(GO) test -race -count=1 $(PURE)"; \
		$(GO) test -race -count=1 $(PURE); \
	else \
		echo "race: skipped, cgo is disabled"; \
	fi

bench:
	$(GO) test -run XXX -bench . -benchtime=1x ./...

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -l:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null 2>&1; then \
		echo golangci-lint run; golangci-lint run; \
	else \
		echo "lint: golangci-lint is not installed; skipped"; \
	fi

demo: build
	$(SUDO) ./bin/strata demo run
	$(SUDO) ./bin/strata demo

clean:
	rm -rf bin
