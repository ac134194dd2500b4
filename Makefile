# Telehub. `make run` starts the hub with a small simulated fleet; `make test`
# installs what the tests need and runs them all.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DATA      ?= ./data
THERMOSTATS ?= 5
WEARABLES ?= 5

.PHONY: all build run test lint fuzz clean screenshots web-assets bench bench-full release

all: build

# The dashboard's chart library, from npm into web/static/vendor/ (embedded).
web-assets:
	scripts/web-assets.sh

build: web-assets
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/telehub ./cmd/telehub
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetsim ./cmd/fleetsim

# Starts the hub with the embedded store and a simulated fleet; Ctrl-C stops both.
run: build
	@scripts/run.sh $(DATA) $(THERMOSTATS) $(WEARABLES)

# Go vet and staticcheck, and docs/openapi.yaml through Redocly CLI (which
# scripts/lint-openapi.sh installs from web/package.json when missing).
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	scripts/lint-openapi.sh

test: web-assets lint
	scripts/test.sh

# Benchmarks against the peers in the same run (scripts/bench.sh installs
# them); both write BENCHMARKS.md. bench: a few minutes; bench-full: the record.
bench: build
	scripts/bench.sh quick

bench-full: build
	scripts/bench.sh full

# Static binaries for the server and the Pi: linux/amd64, linux/arm64 and
# linux/arm (GOARM=7), telehub and fleetsim each, with the version built in,
# and their SHA-256 sums, in $(DIST).
DIST      ?= dist
RELEASE_TARGETS := linux/amd64 linux/arm64 linux/arm/7
release: web-assets
	@mkdir -p $(DIST)
	@set -e; for t in $(RELEASE_TARGETS); do \
	  os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
	  suffix=$$arch; [ "$$arch" = arm ] && suffix=armv$$arm; \
	  for cmd in telehub fleetsim; do \
	    echo "  $$cmd-$$os-$$suffix"; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$([ "$$arch" = arm ] && echo $$arm) \
	      $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/$$cmd-$$os-$$suffix ./cmd/$$cmd; \
	  done; \
	done
	cd $(DIST) && sha256sum telehub-* fleetsim-* > SHA256SUMS

# Every fuzz target of the repository (each `func Fuzz...` in a test file, found
# afresh so that none is forgotten), one after the other, FUZZTIME each.
FUZZTIME ?= 15s
fuzz:
	@grep -rEo --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]*' . | sort | \
	while IFS=: read -r file fn; do \
		pkg=$$(dirname "$$file"); name=$${fn#func }; \
		echo "$(GO) test $$pkg -run XXX -fuzz '^$$name\$$' -fuzztime $(FUZZTIME)"; \
		$(GO) test "$$pkg" -run XXX -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

clean:
	rm -rf $(BIN) $(DIST)

# Refreshes docs/dashboard*.png (used by the README) from the browser test.
screenshots: web-assets
	TELEHUB_UPDATE_SCREENSHOTS=1 scripts/test.sh -run TestDashboardInBrowser
