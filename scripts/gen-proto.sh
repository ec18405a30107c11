#!/usr/bin/env bash
# Regenerates api/dtxv1 from api/dtxv1/dtx.proto. Needs protoc
# (Debian: apt-get install -y protobuf-compiler); installs the Go plugins at
# the versions the committed code was generated with. CI does not run this:
# the generated code is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
GOFLAGS= go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOFLAGS= go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
export PATH="$(go env GOPATH)/bin:$PATH"
go generate ./api/...
