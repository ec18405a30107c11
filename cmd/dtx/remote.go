package main

import (
	"context"

	"github.com/spf13/pflag"

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
}

func addRemoteFlags(fl *pflag.FlagSet, f *remoteFlags) {
	fl.StringVar(&f.coordinator, "coordinator", "", "gRPC address of a running coordinator (dtx serve coordinator) to send the requests to, instead of running the services in this process; --data-dir, --world and the fault and timeout flags then do not apply")
	f.tls.add(fl)
}

func (f *remoteFlags) dial() (*client.Client, error) {
	files, err := f.tls.files()
	if err != nil {
		return nil, err
	}
	cfg := client.Config{Addr: f.coordinator}
	if files != nil {
		_, cli, err := files.Load()
		if err != nil {
			return nil, err
		}
		cfg.TLS = cli
	}
	cl, err := client.Dial(cfg)
	if err != nil {
		return nil, usagef("--coordinator %s: %v", f.coordinator, err)
	}
	return cl, nil
}

// tlsFlags name the files of mutual TLS between components.
type tlsFlags struct{ cert, key, ca string }

func (f *tlsFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.cert, "tls-cert", "", "PEM certificate of this process (mutual TLS between components; needs --tls-key and --tls-ca)")
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
