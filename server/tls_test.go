package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

// TestMutualTLS runs the cluster with mutual TLS between every component:
// purchases go through, and a client without a certificate is refused.
func TestMutualTLS(t *testing.T) {
	c := newCluster(t)
	names := append([]string{twopc.CoordinatorID, "client/test", "admin/test"}, engine.Services...)
	files, err := server.WriteCerts(filepath.Join(c.dir, "certs"), names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.tls = files
	_, adminTLS, err := files["admin/test"].Load()
	if err != nil {
		t.Fatal(err)
	}
	c.web = &client.HTTP{TLS: adminTLS}
	c.start()

	_, cliTLS, err := files["client/test"].Load()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], TLS: cliTLS, RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	outcomes := runAll(t, cl, genRequests(t, c.world, 100, 9, "tls-"), 8)
	checkOutcomes(t, c.waitQuiet(), outcomes)

	plain, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], RetryFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, _, err := plain.Outcome(context.Background(), "tls-1"); err == nil {
		t.Fatal("a client without TLS was served")
	}
	_, noCert, _ := files["client/test"].Load()
	noCert.Certificates = nil
	anon, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], TLS: noCert, RetryFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, _, err := anon.Outcome(context.Background(), "tls-1"); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}
