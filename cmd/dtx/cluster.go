package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
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

// clusterProc is one process of a cluster, as DIR/cluster.json lists it.
type clusterProc struct {
	Name string `json:"name"` // coordinator, coordinator-N (a replica), or a service's name
	Role string `json:"role"` // coordinator or participant
	PID  int    `json:"pid"`
	GRPC string `json:"grpc"`
	HTTP string `json:"http"`
	// Replica is a coordinator replica's id (0: the single coordinator or a service).
	Replica uint64 `json:"replica,omitempty"`
}

// clusterFile is DIR/cluster.json, written by 'dtx cluster up'.
type clusterFile struct {
	Processes []clusterProc `json:"processes"`
}

const clusterFileName = "cluster.json"

// replicaPorts are the gRPC ports of the coordinator replicas of 'dtx
// cluster up --coordinators N' (HTTP: + 1000): the first is the single
// coordinator's, the others follow the services'.
func replicaAddr(id int, http bool) string {
	p := 7100
	if id > 1 {
		p = 7102 + id
	}
	if http {
		p += 1000
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// readClusterFile reads DIR/cluster.json (nil, nil if there is none).
func readClusterFile(dir string) (*clusterFile, error) {
	data, err := os.ReadFile(filepath.Join(dir, clusterFileName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f clusterFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, clusterFileName), err)
	}
	return &f, nil
}

// clusterCoordinators returns the gRPC addresses of the coordinator
// processes DIR/cluster.json names (every replica of a replicated one),
// none if there is no such file.
func clusterCoordinators(dir string) ([]string, error) {
	f, err := readClusterFile(dir)
	if err != nil || f == nil {
		return nil, err
	}
	var addrs []string
	for _, p := range f.Processes {
		if p.Role == "coordinator" && p.GRPC != "" {
			addrs = append(addrs, p.GRPC)
		}
	}
	return addrs, nil
}

func clusterUpCmd() *cobra.Command {
	var dir, world, logLevel string
	var extra, svcExtra []string
	var dedupWindow time.Duration
	var insecure bool
	var coordinators int
	var trace traceFlags
	cmd := &cobra.Command{
		Use:   "up --dir DIR",
		Short: "Start the coordinator and the three services as separate processes on 127.0.0.1; stop them all on Ctrl-C",
		Long: `Up starts 'dtx serve' for the coordinator, inventory, payment and order, each
in its own process with its data directory under --dir and its log in
DIR/NAME.log, on the fixed localhost addresses (gRPC 7100-7103, HTTP 8100-8103).
It prints how to use the cluster and waits; Ctrl-C (or SIGTERM) drains and stops
every process. Running it again on the same --dir recovers the cluster.

--coordinators 3 (or 5) runs a replicated coordinator instead: processes
coordinator-1..N (gRPC 7100, 7104, 7105, ...; HTTP + 1000), one raft group,
of which the leader coordinates; the services and clients know every replica
(dtx run --coordinator 127.0.0.1:7100,127.0.0.1:7104,127.0.0.1:7105). Every
process, its pid and addresses are written to DIR/cluster.json.

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
			var names []string // role of each of procs
			var wg sync.WaitGroup
			exited := make(chan string, len(clusterComponents)+8)
			stopAll := func() {
				for _, p := range procs {
					p.Process.Signal(syscall.SIGTERM)
				}
				wg.Wait()
			}
			if coordinators < 1 || coordinators > 7 || coordinators%2 == 0 {
				return usagef("--coordinators %d: want 1, 3, 5 or 7", coordinators)
			}
			// The processes, in start order: the services first, so that the
			// coordinator's recovery finds them up.
			type spec struct {
				name, role, grpc, http string
				replica                uint64
			}
			var specs []spec
			for _, n := range clusterComponents[:len(clusterComponents)-1] {
				specs = append(specs, spec{name: n, role: "participant", grpc: defaultAddr(n, false), http: defaultAddr(n, true)})
			}
			coordList := defaultAddr(twopc.CoordinatorID, false)
			var replicaFlag []string
			if coordinators == 1 {
				specs = append(specs, spec{name: twopc.CoordinatorID, role: twopc.CoordinatorID, grpc: coordList, http: defaultAddr(twopc.CoordinatorID, true)})
			} else {
				var addrs []string
				for i := 1; i <= coordinators; i++ {
					specs = append(specs, spec{name: fmt.Sprintf("coordinator-%d", i), role: twopc.CoordinatorID,
						grpc: replicaAddr(i, false), http: replicaAddr(i, true), replica: uint64(i)})
					addrs = append(addrs, replicaAddr(i, false))
					replicaFlag = append(replicaFlag, fmt.Sprintf("%d=%s", i, replicaAddr(i, false)))
				}
				coordList = strings.Join(addrs, ",")
			}
			var file clusterFile
			writeFile := func() error {
				data, err := json.MarshalIndent(file, "", "  ")
				if err != nil {
					return err
				}
				tmp := filepath.Join(dir, clusterFileName+".tmp")
				if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
					return err
				}
				return os.Rename(tmp, filepath.Join(dir, clusterFileName))
			}
			for _, sp := range specs {
				name := sp.name
				component := name // the argument of dtx serve
				if sp.role == twopc.CoordinatorID {
					component = twopc.CoordinatorID
				}
				args := []string{"serve", component, "--data-dir", filepath.Join(dir, name), "--log-level", logLevel}
				if world != "" && sp.role != twopc.CoordinatorID {
					args = append(args, "--world", world)
				}
				if dedupWindow > 0 {
					// The same on every process: a service's window must not
					// be shorter than the coordinator's (see serve --help).
					args = append(args, "--dedup-window", dedupWindow.String())
				}
				if sp.role == twopc.CoordinatorID {
					args = append(args, extra...)
				} else {
					args = append(args, svcExtra...)
					if coordinators > 1 {
						args = append(args, "--peer", twopc.CoordinatorID+"="+coordList)
					}
				}
				if sp.replica != 0 {
					args = append(args, "--replica-id", fmt.Sprint(sp.replica), "--replicas", strings.Join(replicaFlag, ","),
						"--listen", sp.grpc, "--http", sp.http)
				}
				if f := certs[component]; f != nil {
					args = append(args, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "--http-tokens", tokens)
				}
				args = append(args, trace.serveArgs(filepath.Join(dir, name+".trace.jsonl"))...)
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
				names = append(names, sp.role)
				dead := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := p.Wait()
					logf.Close()
					close(dead)
					exited <- fmt.Sprintf("%s exited: %v", name, err)
				}()
				file.Processes = append(file.Processes, clusterProc{Name: name, Role: sp.role, PID: p.Process.Pid, GRPC: sp.grpc, HTTP: sp.http, Replica: sp.replica})
				if sp.replica != 0 {
					continue // the replicas come up together: checked below
				}
				if err := client.WaitReady(ctx, web, sp.http, 30*time.Second, dead); err != nil {
					stopAll()
					return fmt.Errorf("%s did not come up (see %s): %w", name, filepath.Join(dir, name+".log"), err)
				}
				fmt.Fprintf(os.Stderr, "dtx: %-13s pid %-7d grpc %s  http %s\n", name, p.Process.Pid, sp.grpc, sp.http)
			}
			for i, sp := range specs {
				if sp.replica == 0 {
					continue
				}
				if err := client.WaitReady(ctx, web, sp.http, 30*time.Second, nil); err != nil {
					stopAll()
					return fmt.Errorf("%s did not come up (see %s): %w", sp.name, filepath.Join(dir, sp.name+".log"), err)
				}
				fmt.Fprintf(os.Stderr, "dtx: %-13s pid %-7d grpc %s  http %s  (replica %d)\n", sp.name, file.Processes[i].PID, sp.grpc, sp.http, sp.replica)
			}
			if err := writeFile(); err != nil {
				stopAll()
				return err
			}
			if coordinators > 1 {
				fmt.Fprintf(os.Stderr, "dtx: replicated coordinator: %d replicas; clients: --coordinator %s; processes in %s\n", coordinators, coordList, filepath.Join(dir, clusterFileName))
			}
			if insecure {
				fmt.Fprintf(os.Stderr, `dtx: cluster up (plaintext, nobody authenticated). Try:
  curl -s -XPOST localhost:8100/v1/purchases -d '{"transaction_id":"c1","user_id":"alice","item_id":"book","quantity":1,"price":"12.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}'
  curl -s localhost:8100/v1/transactions/c1
  dtx run --coordinator %[1]s --input examples/requests.jsonl
  dtx cluster state --dir %[2]s
  curl -s localhost:8101/metrics | grep ^dtx_
Web console: http://localhost:8100/console/
Ctrl-C stops the cluster.
`, coordList, dir)
			} else {
				c := certs[clusterClient]
				fmt.Fprintf(os.Stderr, `dtx: cluster up. Try:
  curl -s --cacert %[1]s --cert %[2]s --key %[3]s -XPOST https://localhost:8100/v1/purchases -d '{"transaction_id":"c1","user_id":"alice","item_id":"book","quantity":1,"price":"12.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}'
  curl -s --cacert %[1]s -H "Authorization: Bearer $(cat %[4]s)" https://localhost:8100/v1/transactions/c1
  dtx run --coordinator %[7]s --cluster-dir %[5]s --input examples/requests.jsonl
  dtx cluster state --dir %[5]s
  curl -s --cacert %[1]s -H "Authorization: Bearer $(cat %[6]s)" https://localhost:8101/metrics | grep ^dtx_
Web console: https://localhost:8100/console/
  (the browser must trust %[1]s, or be told to go on; the page asks for the
  admin bearer token in %[6]s)
Ctrl-C stops the cluster.
`, c.CA, c.Cert, c.Key, filepath.Join(certDir, "client.token"), dir, filepath.Join(certDir, "admin.token"), coordList)
			}
		wait:
			for {
				select {
				case <-ctx.Done():
					break wait
				case msg := <-exited:
					if coordinators > 1 && strings.HasPrefix(msg, "coordinator-") {
						// One replica down: the others go on (a majority
						// elects a new leader). Restart it by hand with the
						// command line in its log, or restart the cluster.
						fmt.Fprintln(os.Stderr, "dtx:", msg, "- the other replicas go on")
						continue
					}
					fmt.Fprintln(os.Stderr, "dtx:", msg, "- stopping the cluster")
					break wait
				}
			}
			// The coordinator first: it stops taking work and finishes what it has.
			for i := len(procs) - 1; i >= 0; i-- {
				procs[i].Process.Signal(syscall.SIGTERM)
				if names[i] == twopc.CoordinatorID && (i == 0 || names[i-1] != twopc.CoordinatorID) {
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
	trace.add(fl)
	fl.IntVar(&coordinators, "coordinators", 1, "coordinator processes: 1, or 3 or 5 replicas of a replicated coordinator (one raft group)")
	fl.StringArrayVar(&extra, "coordinator-flag", nil, "extra flag for the coordinator, e.g. --coordinator-flag=--participants=inventory,payment,order,shipping (repeatable)")
	fl.StringArrayVar(&svcExtra, "service-flag", nil, "extra flag for every service, e.g. --service-flag=--snapshot-every=30s (repeatable)")
	fl.DurationVar(&dedupWindow, "dedup-window", 0, "--dedup-window of every process, the coordinator's and the services' alike (0: dtx serve's default)")
	return cmd
}

// replicaView is one coordinator replica in 'dtx cluster state'.
type replicaView struct {
	Name    string `json:"name"`
	ID      uint64 `json:"id"`
	State   string `json:"state"`
	Term    uint64 `json:"term"`
	Applied uint64 `json:"applied"`
	Commit  uint64 `json:"commit"`
	Leader  uint64 `json:"leader"`
	Serving bool   `json:"serving"`
	Error   string `json:"error,omitempty"`
}

// findLeader asks every coordinator replica of procs for its raft view and
// returns them, with the name and HTTP address of the one that serves as
// the leader ("" if none does).
func findLeader(ctx context.Context, web *client.HTTP, procs []clusterProc) (views []replicaView, name, http string) {
	for _, p := range procs {
		if p.Replica == 0 {
			continue
		}
		v := replicaView{Name: p.Name, ID: p.Replica}
		var st deploy.CoordStatus
		if err := web.Get(ctx, p.HTTP, "/v1/status", &st); err != nil {
			v.Error = err.Error()
		} else if r := st.Replica; r != nil {
			v.State, v.Term, v.Applied, v.Commit, v.Leader, v.Serving = r.State, r.Term, r.Applied, r.Commit, r.Leader, r.Serving
			if r.Serving {
				name, http = p.Name, p.HTTP
			}
		}
		views = append(views, v)
	}
	return views, name, http
}

func clusterStateCmd() *cobra.Command {
	var coordHTTP, dir string
	var services []string
	var wait time.Duration
	var tf tlsFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "state [--dir DIR] [--json] [--coordinator-http ADDR] [--service NAME=HTTPADDR ...]",
		Short: "Print the state of every process of a running cluster as JSON and check the invariants across them",
		Long: `State reads GET /v1/status from the coordinator and GET /v1/state from every
service, waits (up to --wait) until nothing is in flight or in doubt, prints
the state (the shape of 'dtx state') and checks every invariant: each
service's own, and atomicity across inventory, payment and order. It exits
with status 1 if an invariant fails or the cluster does not settle.

With a replicated coordinator (DIR/cluster.json of 'dtx cluster up
--coordinators 3' lists the replicas) it asks every replica for its raft view
and reads the coordinator's state from the leader; the output then has
"leader" (the leading replica's process name) and "replicas" (each one's
state, term, applied and commit index). The output is JSON with or without
--json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = asJSON
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
			var procs []clusterProc
			if dir != "" {
				f, err := readClusterFile(dir)
				if err != nil {
					return err
				}
				if f != nil {
					procs = f.Processes
				}
			}
			replicated := slices.ContainsFunc(procs, func(p clusterProc) bool { return p.Replica != 0 })
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			var (
				cs     *deploy.ClusterState
				views  []replicaView
				leader string
			)
			for {
				addr := coordHTTP
				if replicated {
					views, leader, addr = findLeader(ctx, web, procs)
				}
				if addr == "" {
					err = errors.New("no coordinator replica leads (yet)")
				} else {
					cs, err = deploy.FetchClusterState(ctx, web, addr, svcs)
				}
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
				Leader   string                         `json:"leader,omitempty"`
				Replicas []replicaView                  `json:"replicas,omitempty"`
			}{cs.State, cs.Services, leader, views}
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
	fl.StringVar(&coordHTTP, "coordinator-http", defaultAddr(twopc.CoordinatorID, true), "HTTP address of the coordinator (with a replicated coordinator in DIR/cluster.json: the leader's, found by asking every replica)")
	fl.StringArrayVar(&services, "service", nil, "NAME=HTTPADDR of a service (repeatable; default: the three built-in services at the cluster addresses)")
	fl.DurationVar(&wait, "wait", 30*time.Second, "longest wait for the cluster to settle")
	fl.StringVar(&dir, "dir", "", "the --dir of 'dtx cluster up': use its admin certificate (HTTPS) and its cluster.json; without it and without --tls-*, plain HTTP")
	fl.BoolVar(&asJSON, "json", false, "print JSON (the default; accepted for scripts)")
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
