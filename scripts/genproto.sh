#!/usr/bin/env bash
# Regenerates the Go code for api/**/*.proto into OUT (default: api/).
# protoc comes from Debian's protobuf-compiler; the Go plugins are the
# versions pinned as tools in go.mod, so output is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-api}"
command -v protoc >/dev/null || { echo "genproto: protoc not found; install Debian's protobuf-compiler (make deps)" >&2; exit 1; }
BIN="$(mktemp -d)"
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$BIN/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
mkdir -p "$OUT"
protoc -I api \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
  --go_out="$OUT" --go_opt=paths=source_relative \
  --go-grpc_out="$OUT" --go-grpc_opt=paths=source_relative \
  $(cd api && find trellis -name "*.proto" | sort | sed "s|^|api/|")
