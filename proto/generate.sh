#!/bin/sh
# Regenerates the Go code of proto/msgmesh/v1/msgmesh.proto into OUT_DIR
# (default: proto/msgmesh/v1), with protoc (Debian's protobuf-compiler) and
# pinned plugins: protoc-gen-go at the google.golang.org/protobuf version of
# go.mod, protoc-gen-go-grpc at the version below. go generate ./proto/...
# runs it; TestGeneratedCode checks that the committed files are what it
# makes.
set -eu
cd "$(dirname "$0")/.."
GRPC_PLUGIN=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
out=${1:-proto/msgmesh/v1}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
GOBIN="$bin" go install "$GRPC_PLUGIN"
protoc -I proto \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  msgmesh/v1/msgmesh.proto
# paths=source_relative writes under msgmesh/v1 of the output directory.
mv "$out/msgmesh/v1/"*.go "$out/"
rmdir "$out/msgmesh/v1" "$out/msgmesh"
