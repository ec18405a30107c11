package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spf13/pflag"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

// submitter is what `dtx run` needs from a deployment: the embedded engine,
// or a client of a running coordinator (--coordinator).
type submitter interface {
	Submit(ctx context.Context, req *purchase.Request) (twopc.Outcome, error)
	Crashes() uint64
}

// remoteFlags are `dtx run`'s flags for a running coordinator.
type remoteFlags struct {
	coordinator string
	tls         tlsFlags
	clusterDir  string
}

func addRemoteFlags(fl *pflag.FlagSet, f *remoteFlags) {
	fl.StringVar(&f.coordinator, "coordinator", "", "gRPC address of a running coordinator (dtx serve coordinator), or of every replica of a replicated one, comma-separated (the client follows the leader), to send the requests to, instead of running the services in this process; --data-dir, --world and the fault and timeout flags then do not apply")
	f.tls.add(fl)
	fl.StringVar(&f.clusterDir, "cluster-dir", "", "the --dir of 'dtx cluster up': use the client certificate it made (instead of --tls-*)")
}

func (f *remoteFlags) dial() (*client.Client, error) {
	files, err := f.tls.files()
	if err != nil {
		return nil, err
	}
	if files == nil && f.clusterDir != "" {
		if files, err = clusterCert(f.clusterDir, clusterClient); err != nil {
			return nil, err
		}
	}
	cfg := client.Config{Addr: f.coordinator}
	if files != nil {
		_, cli, err := files.Load()
		if err != nil {
			return nil, err
		}
		cfg.TLS = server.ExpectServer(cli, auth.Coordinator)
	}
	cl, err := client.Dial(cfg)
	if err != nil {
		return nil, usagef("--coordinator %s: %v", f.coordinator, err)
	}
	// One health check tells a wrong or missing credential at once (a
	// coordinator that is down or restarting is waited for as usual).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.Check(ctx); err != nil {
		msg := err.Error()
		switch {
		case cfg.TLS == nil && (strings.Contains(msg, "server preface") || strings.Contains(msg, "HTTP/1")):
			cl.Close()
			return nil, usagef("--coordinator %s does not speak plaintext gRPC; it probably requires TLS: give --cluster-dir DIR or --tls-cert, --tls-key and --tls-ca", f.coordinator)
		case status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated ||
			strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:"):
			cl.Close()
			return nil, fmt.Errorf("--coordinator %s refused this client's credentials: %v", f.coordinator, err)
		}
	}
	return cl, nil
}

// tlsFlags name the files of mutual TLS between components.
type tlsFlags struct{ cert, key, ca string }

func (f *tlsFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.cert, "tls-cert", "", "PEM certificate of this process, naming its dtx:// identity (mutual TLS and authorization; needs --tls-key and --tls-ca)")
	fl.StringVar(&f.key, "tls-key", "", "PEM private key of --tls-cert")
	fl.StringVar(&f.ca, "tls-ca", "", "PEM certificate of the CA that signs every component's certificate")
}

func (f *tlsFlags) files() (*server.TLSFiles, error) {
	if f.cert == "" && f.key == "" && f.ca == "" {
		return nil, nil
	}
	if f.cert == "" || f.key == "" || f.ca == "" {
		return nil, usagef("--tls-cert, --tls-key and --tls-ca go together")
	}
	return &server.TLSFiles{Cert: f.cert, Key: f.key, CA: f.ca}, nil
}

var _ submitter = (*client.Client)(nil)

// The identities `dtx cluster up` makes certificates for, besides the
// components: one client and one operator.
const (
	clusterClient = "client/dtx"
	clusterAdmin  = "admin/dtx"
)

// insecureMarker is the file `dtx cluster up --insecure` leaves in its
// directory: the tools then talk plaintext to it, and only then.
const insecureMarker = "INSECURE"

// clusterCert returns the certificate files of name that `dtx cluster up
// --dir dir` made, or nil if that cluster runs in plaintext (--insecure).
// A directory with neither is an error, never a silent fall back to
// plaintext.
func clusterCert(dir, name string) (*server.TLSFiles, error) {
	certDir := filepath.Join(dir, "certs")
	if _, err := os.Stat(filepath.Join(certDir, "ca.pem")); err != nil {
		if !os.IsNotExist(err) {
			return nil, err
		}
		if fileExists(filepath.Join(dir, insecureMarker)) {
			return nil, nil
		}
		return nil, usagef("%s has no certificates (certs/ca.pem) and is not a cluster started with --insecure: is it the --dir of 'dtx cluster up'?", dir)
	}
	base := server.CertFileBase(name)
	f := &server.TLSFiles{Cert: filepath.Join(certDir, base+".pem"), Key: filepath.Join(certDir, base+"-key.pem"), CA: filepath.Join(certDir, "ca.pem")}
	if _, _, err := f.Load(); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", dir, err)
	}
	return f, nil
}

// clusterWeb returns how to reach the HTTP endpoints of the cluster in dir
// as an operator (plain HTTP for a cluster without TLS).
func clusterWeb(dir string, tf *tlsFlags) (*client.HTTP, error) {
	files, err := tf.files()
	if err != nil {
		return nil, err
	}
	if files == nil && dir != "" {
		if files, err = clusterCert(dir, clusterAdmin); err != nil {
			return nil, err
		}
	}
	if files == nil {
		return nil, nil
	}
	_, cli, err := files.Load()
	if err != nil {
		return nil, err
	}
	return &client.HTTP{TLS: cli}, nil
}
