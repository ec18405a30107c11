// Package dtxv1 holds the dtx wire protocol (dtx.proto) and the Go code
// generated from it. The generated files are committed; regenerate them
// after editing dtx.proto with
//
//	go generate ./api/...
//
// which needs protoc (Debian: apt-get install protobuf-compiler) and the
// plugins that scripts/gen-proto.sh installs at pinned versions.
package dtxv1

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative dtx.proto
