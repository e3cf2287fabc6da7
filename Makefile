# Trellis build. `make demo` runs the demo mesh; `make test` runs every test
# (installing what the tests need first when running as root).
SHELL := /bin/bash
GO ?= go
BIN := bin/trellis
# The sidecar build: the same commands without Kubernetes mode and its
# libraries (-tags trellis_nokube), about 5 MB less resident memory per
# proxy. The sidecar image and the benchmarks use it.
BIN_PROXY := bin/trellis-proxy
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/trellismesh/trellis/internal/version.Version=$(VERSION)
# Debian packages the tests need (prometheus also provides promtool, for
# the alerting rules of deploy/).
TEST_PACKAGES := protobuf-compiler rsyslog rsyslog-gnutls prometheus iptables tcpdump chromium

.PHONY: all build build-proxy test k8s-bins jaeger-bin e2e-clean test-short demo generate generate-check lint deps bench-go benchstat fuzz clean

all: build

# A static binary (no cgo): no libc and loader mapped into every proxy
# (about 1.5 MB less resident memory per sidecar), and it runs in any
# container image.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/trellis

build-proxy:
	CGO_ENABLED=0 $(GO) build -trimpath -tags trellis_nokube -ldflags "$(LDFLAGS)" -o $(BIN_PROXY) ./cmd/trellis

# deps installs the Debian packages the tests need, when missing and root.
deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run make deps as root)"; exit 1; fi; \
	fi

# TRELLIS_REQUIRE_ALL turns "tool missing" skips into failures: under
# make test everything must run.
test: deps build build-proxy k8s-bins jaeger-bin
	gofmt -l . | (! grep .) || (echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...
	$(GO) vet -tags trellis_nokube ./cmd/... ./internal/cli/...
	TRELLIS_REQUIRE_ALL=1 $(GO) test -race -count=1 -timeout 15m ./...

# e2e-clean removes network namespaces and /etc/netns entries that a killed
# test run left behind (test/e2e/netlab_test.go names them trl-*).
e2e-clean:
	@for ns in $$(ip netns list 2>/dev/null | awk '{print $$1}' | grep '^trl-'); do ip netns del $$ns && echo "deleted netns $$ns"; done; \
	rm -rf /etc/netns/trl-*

test-short:
	$(GO) test -short ./...

# k8s-bins builds kube-apiserver and etcd for the Kubernetes-mode tests
# once (about 10 minutes cold on 2 cores) and caches them in
# ~/.cache/trellis/k8s, keyed by version; later runs take no time.
k8s-bins:
	./scripts/k8s-bins.sh

# jaeger-bin builds the Jaeger all-in-one the tracing tests export to, from
# tools/jaeger (its own module), once, cached in ~/.cache/trellis/k8s.
jaeger-bin:
	./scripts/jaeger-bin.sh

demo: build
	./$(BIN) up

generate:
	./scripts/genproto.sh api

lint:
	gofmt -l . | (! grep .) || (echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...

# The Go micro-benchmarks that matter (bench/gobench.sh lists them), 6 runs
# each, ~3 minutes: output to bench/results/go/<short HEAD>.txt. benchstat
# compares two such files: OLD and NEW are commits; NEW defaults to HEAD, OLD
# to the newest results file of an earlier commit.
bench-go:
	GO=$(GO) bench/gobench.sh run

benchstat:
	GO=$(GO) bench/gobench.sh compare "$(OLD)" "$(NEW)"

# The data plane beside nginx and HAProxy pairs on loopback (docs/benchmarks.md):
# installs nginx and haproxy when missing (as root), and fortio for the gRPC
# part (go install). bench takes ~30 minutes (its gRPC part ~5 of them),
# bench-quick under 3 (no gRPC part), bench-grpc only the gRPC part, ~6.
.PHONY: bench bench-quick bench-grpc
bench: build-proxy
	$(GO) run ./bench/cmd/meshbench -trellis $(BIN_PROXY) -o bench/results/latest.md

bench-quick: build-proxy
	$(GO) run ./bench/cmd/meshbench -trellis $(BIN_PROXY) -quick -o bench/results/quick.md

bench-grpc: build-proxy
	$(GO) run ./bench/cmd/meshbench -trellis $(BIN_PROXY) -grpc-only -o bench/results/grpc.md

# The anomaly detectors' evaluation (docs/learning.md): a simulated mesh of
# 100 services for 7 days with labelled attacks, on a virtual clock, about a
# minute; the tables go to bench/results/eval-detect.md. It fails when an
# attack class's recall is under 0.9 or there are over 5 false alerts a day.
.PHONY: eval-detect
eval-detect:
	$(GO) run ./bench/cmd/evaldetect -o bench/results/eval-detect.md

# Every fuzzer of untrusted input, 30 s each (FUZZTIME=2m make fuzz for longer).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/resource/
	$(GO) test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./internal/resource/
	$(GO) test -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime $(FUZZTIME) ./internal/istioimport/
	$(GO) test -run '^$$' -fuzz '^FuzzSignCSR$$' -fuzztime $(FUZZTIME) ./internal/meshca/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyToken$$' -fuzztime $(FUZZTIME) ./internal/jointoken/
	$(GO) test -run '^$$' -fuzz '^FuzzCompileDecide$$' -fuzztime $(FUZZTIME) ./internal/policy/
	$(GO) test -run '^$$' -fuzz '^FuzzRecord$$' -fuzztime $(FUZZTIME) ./internal/telemetry/graph/
	$(GO) test -run '^$$' -fuzz '^FuzzFormats$$' -fuzztime $(FUZZTIME) ./internal/telemetry/sink/
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./internal/h1/
	$(GO) test -run '^$$' -fuzz '^FuzzParseResponse$$' -fuzztime $(FUZZTIME) ./internal/h1/
	$(GO) test -run '^$$' -fuzz '^FuzzCopyChunked$$' -fuzztime $(FUZZTIME) ./internal/h1/
	$(GO) test -run '^$$' -fuzz '^FuzzCanonicalPath$$' -fuzztime $(FUZZTIME) ./internal/policy/
	$(GO) test -run '^$$' -fuzz '^FuzzRelay$$' -fuzztime $(FUZZTIME) ./internal/dataplane/h2relay/
	$(GO) test -run '^$$' -fuzz '^FuzzFastVsNetHTTP$$' -fuzztime $(FUZZTIME) ./internal/dataplane/
	$(GO) test -run '^$$' -fuzz '^FuzzReview$$' -fuzztime $(FUZZTIME) ./internal/kube/webhook/
	$(GO) test -run '^$$' -fuzz '^FuzzAppend$$' -fuzztime $(FUZZTIME) ./internal/pathtemplate/
	$(GO) test -run '^$$' -fuzz '^FuzzRecord$$' -fuzztime $(FUZZTIME) ./internal/telemetry/shapes/
	$(GO) test -run '^$$' -fuzz '^FuzzAuthenticate$$' -fuzztime $(FUZZTIME) ./internal/jwtauthn/
	$(GO) test -run '^$$' -fuzz '^FuzzSniffHost$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/dataplane/capture/
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeHost$$' -fuzztime $(FUZZTIME) ./internal/egress/

clean:
	rm -rf bin .trellis
