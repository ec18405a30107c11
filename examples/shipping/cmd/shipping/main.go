// Command shipping runs the example shipping participant as its own
// process, next to a dtx cluster:
//
//	go run ./examples/shipping/cmd/shipping --listen 127.0.0.1:7104 \
//	    --http 127.0.0.1:8104 --data-dir /tmp/dtx-cluster/shipping \
//	    --coordinator 127.0.0.1:7100
//
// and the coordinator started with --participants
// inventory,payment,order,shipping --peer shipping=127.0.0.1:7104.
// SIGTERM or SIGINT drain it and stop it; it recovers from its log at the
// next start.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dtx-dev/dtx/examples/shipping"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7104", "gRPC address")
	httpAddr := flag.String("http", "127.0.0.1:8104", "HTTP address (health, metrics, state)")
	dir := flag.String("data-dir", "shipping-data", "data directory")
	coord := flag.String("coordinator", "127.0.0.1:7100", "the coordinator's gRPC address")
	zones := flag.Int("zones", 16, "delivery zones")
	capacity := flag.Int64("capacity", 1_000_000, "parcels per zone")
	cert := flag.String("tls-cert", "", "PEM certificate naming dtx://participant/shipping (mutual TLS; with --tls-key and --tls-ca)")
	key := flag.String("tls-key", "", "PEM key of --tls-cert")
	ca := flag.String("tls-ca", "", "PEM certificate of the CA")
	tokens := flag.String("http-tokens", "", "HTTP bearer token file (see docs/SECURITY.md)")
	insecure := flag.Bool("insecure", false, "allow plaintext on a non-loopback address (nobody authenticated)")
	flag.Parse()
	var tlsFiles *server.TLSFiles
	switch {
	case *cert != "" && *key != "" && *ca != "":
		tlsFiles = &server.TLSFiles{Cert: *cert, Key: *key, CA: *ca}
	case *cert != "" || *key != "" || *ca != "":
		fmt.Fprintln(os.Stderr, "shipping: --tls-cert, --tls-key and --tls-ca go together")
		os.Exit(2)
	}
	if *zones < 1 || *capacity < 0 {
		fmt.Fprintln(os.Stderr, "shipping: --zones must be >= 1 and --capacity >= 0")
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	p, err := server.StartParticipant(server.ParticipantConfig{
		Common: server.Common{
			ID: shipping.ID, Listen: *listen, HTTP: *httpAddr, DataDir: *dir,
			Peers: map[string]string{twopc.CoordinatorID: *coord},
			TLS:   tlsFiles, HTTPTokens: *tokens, Insecure: *insecure,
			Logger: log,
		},
		Service: server.Service{
			NewResource: func() (participant.Resource, error) { return shipping.New(*zones, *capacity), nil },
			State:       func(r participant.Resource) any { return r.(*shipping.Store).State() },
			Check:       func(r participant.Resource) error { return r.(*shipping.Store).Check() },
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shipping:", err)
		os.Exit(1)
	}
	log.Info("serving", "grpc", p.Addr(), "http", p.HTTPAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case err := <-p.Err():
		log.Error("service failed", "err", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Error("shutdown", "err", err)
		os.Exit(1)
	}
}
