package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

func clusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a whole dtx cluster on localhost (one process per component) and inspect it",
	}
	cmd.AddCommand(clusterUpCmd(), clusterStateCmd(), clusterCertsCmd(), clusterLoadCmd())
	return cmd
}

// components in start order: the services first, so that the coordinator's
// recovery finds them up.
var clusterComponents = []string{"inventory", "payment", "order", twopc.CoordinatorID}

func clusterUpCmd() *cobra.Command {
	var dir, world, logLevel string
	var extra []string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "up --dir DIR",
		Short: "Start the coordinator and the three services as separate processes on 127.0.0.1; stop them all on Ctrl-C",
		Long: `Up starts 'dtx serve' for the coordinator, inventory, payment and order, each
in its own process with its data directory under --dir and its log in
DIR/NAME.log, on the fixed localhost addresses (gRPC 7100-7103, HTTP 8100-8103).
It prints how to use the cluster and waits; Ctrl-C (or SIGTERM) drains and stops
every process. Running it again on the same --dir recovers the cluster.

Mutual TLS and authorization are on: on first start it makes a throw-away CA
and certificates in DIR/certs (one per component, client/dtx for clients,
admin/dtx for operators) and an HTTP bearer token file (DIR/certs/http-tokens,
with DIR/certs/client.token and admin.token); later starts reuse them.
'dtx cluster state --dir DIR', 'dtx cluster load --dir DIR' and 'dtx run
--coordinator ... --cluster-dir DIR' find them there. --insecure runs plaintext
(loopback only, nobody authenticated).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			var certs map[string]*server.TLSFiles
			var web *client.HTTP
			certDir := filepath.Join(dir, "certs")
			tokens := filepath.Join(certDir, "http-tokens")
			if !insecure {
				os.Remove(filepath.Join(dir, insecureMarker))
				var made bool
				certs, made, err = server.EnsureCerts(certDir, append([]string{clusterClient, clusterAdmin}, clusterComponents...), 365*24*time.Hour)
				if err != nil {
					return err
				}
				if made || !fileExists(tokens) {
					if err := writeClusterTokens(certDir); err != nil {
						return err
					}
				}
				if web, err = clusterWeb(dir, &tlsFlags{}); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "dtx: mutual TLS and authorization on; certificates in %s (clients: --cluster-dir %s, or --tls-cert %s --tls-key %s --tls-ca %s)\n",
					certDir, dir, certs[clusterClient].Cert, certs[clusterClient].Key, certs[clusterClient].CA)
			} else if _, err := os.Stat(filepath.Join(certDir, "ca.pem")); err == nil {
				return usagef("--insecure: %s holds the certificates of a cluster with TLS; the tools would use them against a plaintext cluster: remove that directory first", certDir)
			} else if err := os.WriteFile(filepath.Join(dir, insecureMarker), []byte("this cluster runs in plaintext (dtx cluster up --insecure)\n"), 0o644); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var procs []*exec.Cmd
			var wg sync.WaitGroup
			exited := make(chan string, len(clusterComponents))
			stopAll := func() {
				for _, p := range procs {
					p.Process.Signal(syscall.SIGTERM)
				}
				wg.Wait()
			}
			for _, name := range clusterComponents {
				args := []string{"serve", name, "--data-dir", filepath.Join(dir, name), "--log-level", logLevel}
				if world != "" && name != twopc.CoordinatorID {
					args = append(args, "--world", world)
				}
				if name == twopc.CoordinatorID {
					args = append(args, extra...)
				}
				if f := certs[name]; f != nil {
					args = append(args, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "--http-tokens", tokens)
				}
				logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if err != nil {
					stopAll()
					return err
				}
				p := exec.Command(self, args...)
				p.Stdout, p.Stderr = logf, logf
				if err := p.Start(); err != nil {
					logf.Close()
					stopAll()
					return err
				}
				procs = append(procs, p)
				dead := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := p.Wait()
					logf.Close()
					close(dead)
					exited <- fmt.Sprintf("%s exited: %v", name, err)
				}()
				if err := client.WaitReady(ctx, web, defaultAddr(name, true), 30*time.Second, dead); err != nil {
					stopAll()
					return fmt.Errorf("%s did not come up (see %s): %w", name, filepath.Join(dir, name+".log"), err)
				}
				fmt.Fprintf(os.Stderr, "dtx: %-11s pid %-7d grpc %s  http %s\n", name, p.Process.Pid, defaultAddr(name, false), defaultAddr(name, true))
			}
			if insecure {
				fmt.Fprintf(os.Stderr, `dtx: cluster up (plaintext, nobody authenticated). Try:
  curl -s -XPOST localhost:8100/v1/purchases -d '{"transaction_id":"c1","user_id":"alice","item_id":"book","quantity":1,"price":"12.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}'
  curl -s localhost:8100/v1/transactions/c1
  dtx run --coordinator 127.0.0.1:7100 --input examples/requests.jsonl
  dtx cluster state
  curl -s localhost:8101/metrics | grep ^dtx_
Web console: http://localhost:8100/console/
Ctrl-C stops the cluster.
`)
			} else {
				c := certs[clusterClient]
				fmt.Fprintf(os.Stderr, `dtx: cluster up. Try:
  curl -s --cacert %[1]s --cert %[2]s --key %[3]s -XPOST https://localhost:8100/v1/purchases -d '{"transaction_id":"c1","user_id":"alice","item_id":"book","quantity":1,"price":"12.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}'
  curl -s --cacert %[1]s -H "Authorization: Bearer $(cat %[4]s)" https://localhost:8100/v1/transactions/c1
  dtx run --coordinator 127.0.0.1:7100 --cluster-dir %[5]s --input examples/requests.jsonl
  dtx cluster state --dir %[5]s
  curl -s --cacert %[1]s -H "Authorization: Bearer $(cat %[6]s)" https://localhost:8101/metrics | grep ^dtx_
Web console: https://localhost:8100/console/
  (the browser must trust %[1]s, or be told to go on; the page asks for the
  admin bearer token in %[6]s)
Ctrl-C stops the cluster.
`, c.CA, c.Cert, c.Key, filepath.Join(certDir, "client.token"), dir, filepath.Join(certDir, "admin.token"))
			}
			select {
			case <-ctx.Done():
			case msg := <-exited:
				fmt.Fprintln(os.Stderr, "dtx:", msg, "- stopping the cluster")
			}
			// The coordinator first: it stops taking work and finishes what it has.
			for i := len(procs) - 1; i >= 0; i-- {
				procs[i].Process.Signal(syscall.SIGTERM)
				if clusterComponents[i] == twopc.CoordinatorID {
					time.Sleep(100 * time.Millisecond)
				}
			}
			wg.Wait()
			fmt.Fprintln(os.Stderr, "dtx: cluster stopped")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "dir", "", "directory for every component's data directory and log")
	fl.StringVar(&world, "world", "", "JSON world file for new service data directories (default: the example world)")
	fl.StringVar(&logLevel, "log-level", "info", "log level of every component")
	fl.BoolVar(&insecure, "insecure", false, "plaintext gRPC and HTTP, nobody authenticated (loopback only); the default is mutual TLS with certificates made in DIR/certs")
	fl.Bool("tls", true, "kept for old scripts: TLS is the default")
	fl.MarkHidden("tls")
	fl.StringArrayVar(&extra, "coordinator-flag", nil, "extra flag for the coordinator, e.g. --coordinator-flag=--participants=inventory,payment,order,shipping (repeatable)")
	return cmd
}

func clusterStateCmd() *cobra.Command {
	var coordHTTP, dir string
	var services []string
	var wait time.Duration
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "state [--dir DIR] [--coordinator-http ADDR] [--service NAME=HTTPADDR ...]",
		Short: "Print the state of every process of a running cluster as JSON and check the invariants across them",
		Long: `State reads GET /v1/status from the coordinator and GET /v1/state from every
service, waits (up to --wait) until nothing is in flight or in doubt, prints
the state (the shape of 'dtx state') and checks every invariant: each
service's own, and atomicity across inventory, payment and order. It exits
with status 1 if an invariant fails or the cluster does not settle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svcs := map[string]string{}
			if len(services) == 0 {
				for _, n := range engine.Services {
					svcs[n] = defaultAddr(n, true)
				}
			}
			for _, s := range services {
				n, addr, ok := strings.Cut(s, "=")
				if !ok || n == "" || addr == "" {
					return usagef("--service %q: want NAME=HOST:PORT", s)
				}
				svcs[n] = addr
			}
			web, err := clusterWeb(dir, &tf)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			var cs *deploy.ClusterState
			for {
				cs, err = deploy.FetchClusterState(ctx, web, coordHTTP, svcs)
				if err == nil && cs.Quiet() {
					break
				}
				select {
				case <-ctx.Done():
					if err != nil {
						return err
					}
					return fmt.Errorf("not settled after %v: %d in flight at the coordinator, in doubt: %v", wait, cs.Coordinator.Inflight, cs.State.InDoubt)
				case <-time.After(50 * time.Millisecond):
				}
			}
			out := struct {
				engine.State
				Services map[string]deploy.ServiceState `json:"services"`
			}{cs.State, cs.Services}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return err
			}
			if err := cs.Check(); err != nil {
				return fmt.Errorf("invariants violated: %w", err)
			}
			fmt.Fprintf(os.Stderr, "dtx: cluster settled; %d committed orders; invariants hold\n", len(cs.State.Order.Orders))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&coordHTTP, "coordinator-http", defaultAddr(twopc.CoordinatorID, true), "HTTP address of the coordinator")
	fl.StringArrayVar(&services, "service", nil, "NAME=HTTPADDR of a service (repeatable; default: the three built-in services at the cluster addresses)")
	fl.DurationVar(&wait, "wait", 30*time.Second, "longest wait for the cluster to settle")
	fl.StringVar(&dir, "dir", "", "the --dir of 'dtx cluster up': use its admin certificate (HTTPS); without it and without --tls-*, plain HTTP")
	tf.add(fl)
	return cmd
}

// writeClusterTokens writes the HTTP bearer token file of a cluster
// (http-tokens: one token for client/dtx, one for admin/dtx) and each
// token alone (client.token, admin.token), all readable by the owner only.
func writeClusterTokens(certDir string) error {
	var lines strings.Builder
	lines.WriteString("# HTTP bearer tokens of this cluster: IDENTITY TOKEN (see docs/SECURITY.md)\n")
	for _, who := range []struct{ id, file string }{{clusterClient, "client.token"}, {clusterAdmin, "admin.token"}} {
		tok, err := auth.NewToken()
		if err != nil {
			return err
		}
		fmt.Fprintf(&lines, "dtx://%s %s\n", who.id, tok)
		if err := os.WriteFile(filepath.Join(certDir, who.file), []byte(tok), 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(certDir, "http-tokens"), []byte(lines.String()), 0o600)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func clusterCertsCmd() *cobra.Command {
	var out string
	var names []string
	var valid time.Duration
	cmd := &cobra.Command{
		Use:   "certs --out DIR [--name NAME ...]",
		Short: "Make a throw-away CA and a certificate per identity (coordinator, a participant's name, client/NAME, app/NAME, admin/NAME)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			files, err := server.WriteCerts(out, names, valid)
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Printf("%s: --tls-cert %s --tls-key %s --tls-ca %s\n", n, files[n].Cert, files[n].Key, files[n].CA)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the PEM files")
	cmd.Flags().StringSliceVar(&names, "name", append([]string{clusterClient, clusterAdmin}, clusterComponents...), "identities to make certificates for: coordinator, a participant's node name, or ROLE/NAME with ROLE client, app (may SubmitTx), admin or participant")
	cmd.Flags().DurationVar(&valid, "valid", 30*24*time.Hour, "validity")
	return cmd
}
