// Package msgmeshv1 is the generated Go code of the sidecar's gRPC API
// (msgmesh.proto, docs/grpc.md): the messages and the Mesh service's
// client and server stubs. The sidecar serves it (package msgmesh); Go
// apps can call it with NewMeshClient, though the mesh-protocol SDK
// (package client) is the richer choice for Go.
//
// Regenerate with go generate after editing msgmesh.proto; never edit the
// .pb.go files by hand.
package msgmeshv1

//go:generate sh ../../generate.sh
