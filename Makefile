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

.PHONY: all build run test lint fuzz clean web-assets

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

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

test: web-assets lint
	scripts/test.sh

fuzz:
	$(GO) test ./ingest -run XXX -fuzz FuzzDecode -fuzztime 60s

clean:
	rm -rf $(BIN)
