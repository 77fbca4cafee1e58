# Strait: the two commands that matter are `make demo` and `make test`.
GO        ?= go
BIN       := bin/strait
PKGS      := ./...
# Each go test binary gets this long; the whole suite must stay well under CI's 90 minutes.
TEST_TIMEOUT ?= 25m
FUZZTIME  ?= 50000x

.PHONY: build test demo bench fuzz lint clean chaos

build:
	$(GO) build -o $(BIN) ./cmd/strait

# Everything: unit, end-to-end (kfake + Go clients) and interop tests (kcat,
# confluent-kafka-python, kafka-python, kafkajs, HAProxy, SoftHSM2). Interop
# tests build and run bin/strait.
# The data path, the crypto, policy and authswap (re-authentication, token
# renewal, parallel policy runs) run a second time under the race detector.
RACE_PKGS := ./proxy/... ./interceptor/... ./metadata/... ./topicid/... ./crypto/... ./records/... ./config/... \
             ./policy/... ./catalog/... ./authswap/... ./internal/vaultauth/...

test: build
	$(GO) vet $(PKGS)
	STRAIT_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

demo:
	$(GO) run ./cmd/strait-demo

bench: build
	STRAIT_BIN=$(CURDIR)/$(BIN) $(GO) run ./cmd/strait-bench

# The long chaos run (test/chaos, docs/reliability.md): producers and
# consumers through encrypting/decrypting Strait while brokers, the KMS and
# Strait itself fail, for CHAOS_DURATION. `make test` runs the same test for
# 50s. STRAIT_CHAOS_SEED repeats a schedule.
CHAOS_DURATION ?= 5m
chaos: build
	STRAIT_BIN=$(CURDIR)/$(BIN) STRAIT_CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -count=1 -run TestChaos -v -timeout 20m ./test/chaos/

# Runs every fuzz target for FUZZTIME each.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

clean:
	rm -rf bin
