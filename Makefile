# strata. `make help` lists the targets. Tests mount for real: run them as root.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)

# Packages with no FUSE server in them: cheap to run under the race detector.
PURE := ./whiteout/... ./layers/... ./internal/mounts/... ./internal/depcheck/... ./internal/beneath/... \
        ./internal/cgroups/... ./internal/fusedev/...

# sudo, unless we are root already.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help build test race stress fuzz bench lint demo clean

help:
	@echo "make build   build bin/strata"
	@echo "make test    go vet, every test (mounts: needs root), -race on the pure packages"
	@echo "make stress  the long runs of the reliability tests: crash, concurrency, fsx (needs root)"
	@echo "make fuzz    each fuzz target for FUZZTIME (default 60s)"
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

# The race detector needs cgo. Besides the pure packages, it watches a union
# under load: a short run of the concurrency stress test, whose union is
# served by the test process itself.
race:
	@if [ "$$($(GO) env CGO_ENABLED)" = 1 ]; then \
		echo "$(GO) test -race -count=1 $(PURE)"; \
		$(GO) test -race -count=1 $(PURE); \
		echo "$(GO) test -race -count=1 -run 'TestStress$$' ./test/ -args -stress.time=5s"; \
		$(GO) test -race -count=1 -run 'TestStress$$' ./test/ -args -stress.time=5s; \
	else \
		echo "race: skipped, cgo is disabled"; \
	fi

# What make test runs briefly, at length: daemons killed during copy-ups,
# renames and deletes (5 minutes); goroutines and processes at one mount (2
# minutes); the fsx exerciser, 100000 operations over a lower file per whiteout
# format.
stress:
	$(GO) test -count=1 -timeout 30m -run 'TestCrash$$' -v ./cmd/strata/ -args -crash.time=5m
	$(GO) test -count=1 -timeout 30m -run 'TestStress$$' -v ./test/ -args -stress.time=2m
	$(GO) test -count=1 -timeout 60m -run 'TestFsx$$' -v ./test/ -args -fsx.ops=100000

# Each fuzz target for FUZZTIME; what they find lands in testdata/fuzz, where
# go test runs it from then on. Minimizing an input costs executions, each of
# which may unpack a layer: 100 of them are enough.
FUZZTIME ?= 60s
FUZZ := ./whiteout:FuzzClassify ./layers:FuzzParseFuseOverlay ./layers:FuzzUnpack ./layers:FuzzReadArchive ./layers:FuzzReadLayout
fuzz:
	@for t in $(FUZZ); do \
		echo "$(GO) test -run XXX -fuzz '^$${t#*:}$$' -fuzztime $(FUZZTIME) $${t%%:*}"; \
		$(GO) test -run XXX -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $${t%%:*} || exit 1; \
	done

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
