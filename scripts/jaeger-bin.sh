#!/usr/bin/env bash
# jaeger-bin.sh builds the Jaeger all-in-one (v2: an OpenTelemetry
# Collector distribution with Jaeger's query service and in-memory
# storage) from the Go module proxy and caches it outside the repository,
# keyed by version:
#
#   $TRELLIS_K8S_CACHE (default $HOME/.cache/trellis/k8s)/jaeger-v$JAEGER_VERSION/jaeger
#
# The tracing tests (internal/proxy/tracing_jaeger_test.go) run it on
# loopback. The build uses the module tools/jaeger (go.mod and go.sum
# committed: `go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@vX`),
# so the main module does not take Jaeger's dependencies. A cold build
# takes a few minutes on 2 cores; with the binary cached this exits at
# once, offline. It prints the binary's path.
set -euo pipefail

JAEGER_VERSION=${JAEGER_VERSION:-1.75.0}
CACHE=${TRELLIS_K8S_CACHE:-$HOME/.cache/trellis/k8s}
GO=${GO:-go}
dir=$CACHE/jaeger-v$JAEGER_VERSION
root=$(cd "$(dirname "$0")/.." && pwd)

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-jaeger"
flock 9 # one build at a time; a second caller waits and then finds the binary

if [ ! -x "$dir/jaeger" ]; then
	grep -q "github.com/jaegertracing/jaeger v$JAEGER_VERSION " "$root/tools/jaeger/go.mod" ||
		{ echo "jaeger-bin: tools/jaeger/go.mod does not require jaeger v$JAEGER_VERSION" >&2; exit 1; }
	echo "jaeger-bin: building jaeger v$JAEGER_VERSION (a few minutes cold)" >&2
	mkdir -p "$dir.tmp"
	(cd "$root/tools/jaeger" && CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$dir.tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2)
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi
echo "$dir/jaeger"
