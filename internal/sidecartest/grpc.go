package sidecartest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// GRPCConn dials the sidecar's gRPC API at addr; it closes in t.Cleanup.
func GRPCConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// As returns a context of at most d (race-scaled) whose gRPC metadata
// names app (and its secret, when not empty), the way an app calls the
// sidecar's gRPC API.
func As(t testing.TB, app, secret string, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Scaled(d))
	t.Cleanup(cancel)
	md := metadata.Pairs("msgmesh-app", app)
	if secret != "" {
		md.Set("authorization", "Bearer "+secret)
	}
	return metadata.NewOutgoingContext(ctx, md)
}
