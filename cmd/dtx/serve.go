package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/twopc"
)

// defaultPorts are the gRPC ports of `dtx cluster up` and of `dtx serve`
// without --listen/--peer; each HTTP port is the gRPC port + 1000.
var defaultPorts = map[string]int{twopc.CoordinatorID: 7100, "inventory": 7101, "payment": 7102, "order": 7103}

func defaultAddr(name string, http bool) string {
	p, ok := defaultPorts[name]
	if !ok {
		return ""
	}
	if http {
		p += 1000
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

type serveFlags struct {
	listen, http, dataDir, world, logLevel string
	peers                                  []string
	participants                           []string
	tls                                    tlsFlags
	prepareTimeout, commitRetry            time.Duration
	lockTimeout, grace                     time.Duration
	deadlock                               string
	dedupWindow                            time.Duration
	snapshotEvery                          time.Duration
	snapshotBytes                          uint64
	snapshotBytesSet                       bool
	dedupCount                             int
	maxAttempts                            int
	maxRequest                             int
	callTimeout                            time.Duration
	streams                                int
	cpuProfile                             string
	pprof                                  bool
	store                                  string
	insecure                               bool
	httpTokens                             string
	maxConns                               int
	handshakeTimeout, idleTimeout          time.Duration
	trace                                  traceFlags
	replicaID                              uint64
	replicas                               string
	raftTick                               time.Duration
	electionTicks                          int
}

func serveCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve coordinator|inventory|payment|order [flags]",
		Short: "Run one component as a networked server (gRPC between components, HTTP for health, metrics and the JSON API)",
		Long: `Serve runs one dtx component as its own long-running process. Components talk
gRPC (the dtx.v1.Transport protocol of api/dtxv1/dtx.proto), messages for many
transactions to the same node sharing one call. Each process recovers from the
log in --data-dir when it starts, and drains gracefully on SIGTERM or SIGINT:
it stops taking new work, lets what is in flight finish (up to --grace), and
closes its log; what is left is finished by recovery at the next start.

The coordinator serves the client API: gRPC dtx.v1.Coordinator, and HTTP/JSON
  POST /v1/purchases          body: one JSON Lines request
  GET  /v1/transactions/{id}  the outcome of a transaction
Every process serves GET /healthz, /readyz and /metrics (Prometheus); a service
also GET /v1/state (its state and in-doubt branches, as JSON).

Security: with --tls-cert/--tls-key/--tls-ca every peer is authenticated by its
certificate's dtx:// identity (dtx://coordinator, dtx://participant/NAME,
dtx://client/NAME, dtx://app/NAME, dtx://admin/NAME; 'dtx cluster certs' makes
them) and may only do what its role may (docs/SECURITY.md); the HTTP endpoints
are HTTPS and need a client certificate or a bearer token (--http-tokens),
except /healthz and /readyz. Without TLS nobody is authenticated: dtx serve
then binds loopback addresses only, unless --insecure is given.

A replicated coordinator is 2F+1 processes, each 'dtx serve coordinator
--replica-id N --replicas 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT' with its own
--data-dir: the replicas elect a leader (Raft), and only the leader runs the
two-phase commit; its log records are committed by a majority before any
decision leaves, so a transaction survives the loss of F replicas. Each
replica listens on its own address in --replicas (unless --listen says
otherwise); the others refuse clients and participants with the leader's
address. Participants and clients list every replica:
--peer coordinator=HOST:PORT,HOST:PORT,HOST:PORT and dtx run --coordinator
HOST:PORT,HOST:PORT,HOST:PORT.

Without --listen, --http and --peer, the addresses of 'dtx cluster up' are used:
coordinator 127.0.0.1:7100, inventory :7101, payment :7102, order :7103, each
with HTTP on the port + 1000.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{twopc.CoordinatorID, "inventory", "payment", "order"},
		RunE: func(cmd *cobra.Command, args []string) error {
			f.snapshotBytesSet = cmd.Flags().Changed("snapshot-log-bytes")
			return serveMain(cmd.Context(), args[0], &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "gRPC address to listen on (default: the component's cluster address)")
	fl.StringVar(&f.http, "http", "", "HTTP address for health, metrics and the JSON API (default: the gRPC port + 1000; \"off\" for none)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory of this component (required)")
	fl.StringVar(&f.world, "world", "", "JSON file with the initial state of a new data directory (services; default: the built-in example world)")
	fl.StringArrayVar(&f.peers, "peer", nil, "NAME=ADDR: gRPC address of another component (repeatable; a built-in component not named is at its cluster address)")
	fl.StringSliceVar(&f.participants, "participants", nil, "coordinator: the participants of every purchase, in order (default inventory,payment,order); each needs an address")
	f.tls.add(fl)
	f.trace.add(fl)
	fl.DurationVar(&f.prepareTimeout, "prepare-timeout", time.Second, "time for all votes to arrive before a rollback (services: paces in-doubt inquiries)")
	fl.DurationVar(&f.commitRetry, "commit-retry", 50*time.Millisecond, "coordinator: first delay between resends of a decision (backs off)")
	fl.DurationVar(&f.lockTimeout, "lock-timeout", 500*time.Millisecond, "services: longest wait for a lock before voting NO")
	fl.IntVar(&f.maxAttempts, "max-attempts", twopc.DefaultMaxAttempts, "coordinator: most runs of a deadlock victim: it is restarted with its id and timestamp instead of rolled back (1: no restarts)")
	fl.DurationVar(&f.dedupWindow, "dedup-window", 24*time.Hour, "keep each outcome this long (of running time, up to about 8/7 of it) for resubmissions of its id; then \"outcome expired\" until at least twice this long, then the id is new (0: keep every outcome forever); give every process of a cluster the same window: a service's must not be shorter than the coordinator's, since it forgets a finished branch after at least twice its window so that the coordinator has forgotten the outcome first)")
	fl.IntVar(&f.dedupCount, "dedup-count", 0, "with --dedup-window, also start a new generation of outcomes every seventh of this many (at most about 8/7 of this many kept; 0: no count bound)")
	fl.DurationVar(&f.snapshotEvery, "snapshot-every", time.Minute, "each component (services, a coordinator, each coordinator replica) snapshots its state and compacts its log this often while it logs (0: no time trigger)")
	fl.Uint64Var(&f.snapshotBytes, "snapshot-log-bytes", 1<<20, "each component also snapshots after this many bytes of log records (0: no size trigger; both 0: never, and the logs keep every record); a replica of a replicated coordinator, whose snapshots hold its outcome tables whole, 64 MiB unless given")
	fl.StringVar(&f.deadlock, "deadlock", "detect", "deadlock policy: detect, wound-wait or timeout (the same on every component)")
	fl.DurationVar(&f.grace, "grace", 10*time.Second, "longest graceful drain on SIGTERM")
	fl.DurationVar(&f.callTimeout, "call-timeout", 2*time.Second, "deadline of one call to another component")
	fl.IntVar(&f.streams, "streams", 1, "calls in flight at once to each other component (1 keeps message order and batches most)")
	fl.IntVar(&f.maxRequest, "max-request-bytes", 64<<10, "largest HTTP request body and client API call")
	fl.StringVar(&f.store, "store", "", "services: keep the state in this PostgreSQL database (postgres://…) instead of the log")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (structured JSON logs on stderr)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the process's whole life to this file (written at exit)")
	fl.BoolVar(&f.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the HTTP address (admin identity required with TLS)")
	fl.BoolVar(&f.insecure, "insecure", false, "allow serving without TLS on a non-loopback address: nobody is authenticated")
	fl.StringVar(&f.httpTokens, "http-tokens", "", "file of HTTP bearer tokens, one 'dtx://ROLE/NAME TOKEN' a line (mode 600); HTTP callers may use a token instead of a client certificate")
	fl.IntVar(&f.maxConns, "max-conns", 0, "most connections each listener holds at once (0: a quarter of the file descriptor limit, at most 4096)")
	fl.DurationVar(&f.handshakeTimeout, "handshake-timeout", 5*time.Second, "a new connection that has not finished its TLS handshake and first bytes by then is closed")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 2*time.Minute, "a connection with no call for this long is closed")
	fl.Uint64Var(&f.replicaID, "replica-id", 0, "coordinator: this process's id in --replicas (a replicated coordinator; 0: the single coordinator)")
	fl.StringVar(&f.replicas, "replicas", "", "coordinator: every replica as ID=HOST:PORT, comma-separated (3 or 5 of them), with --replica-id")
	fl.DurationVar(&f.raftTick, "raft-tick", 10*time.Millisecond, "coordinator replicas: the raft tick (heartbeats every tick)")
	fl.IntVar(&f.electionTicks, "election-ticks", 10, "coordinator replicas: ticks without a leader's heartbeat before an election")
	return cmd
}

func serveMain(ctx context.Context, name string, f *serveFlags) error {
	builtin := name == twopc.CoordinatorID || slices.Contains(services.IDs(), name)
	if !builtin {
		return usagef("unknown component %q: want coordinator, inventory, payment or order (a service of your own runs as its own binary: see examples/shipping)", name)
	}
	if f.dataDir == "" {
		return usagef("--data-dir is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usagef("--log-level: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	policy, err := twopc.ParseDeadlockPolicy(f.deadlock)
	if err != nil {
		return usagef("--deadlock: %v", err)
	}
	peers := map[string]string{} // the cluster addresses, unless --peer says otherwise
	for n := range defaultPorts {
		if n != name {
			peers[n] = defaultAddr(n, false)
		}
	}
	for _, p := range f.peers {
		n, addr, ok := strings.Cut(p, "=")
		if !ok || n == "" || addr == "" {
			return usagef("--peer %q: want NAME=HOST:PORT", p)
		}
		peers[n] = addr
	}
	var replicas map[uint64]string
	if f.replicaID != 0 || f.replicas != "" {
		if name != twopc.CoordinatorID {
			return usagef("--replica-id and --replicas are for the coordinator only")
		}
		replicas, err = parseReplicas(f.replicas)
		if err != nil {
			return usagef("--replicas: %v", err)
		}
		if _, ok := replicas[f.replicaID]; !ok {
			return usagef("--replica-id %d is not one of --replicas %q", f.replicaID, f.replicas)
		}
		if f.electionTicks < 2 {
			return usagef("--election-ticks %d: at least 2", f.electionTicks)
		}
		if f.raftTick <= 0 {
			return usagef("--raft-tick %v: must be > 0", f.raftTick)
		}
	}
	listen := f.listen
	if listen == "" && replicas != nil {
		listen = replicas[f.replicaID]
	}
	if listen == "" {
		listen = defaultAddr(name, false)
	}
	httpAddr := f.http
	switch httpAddr {
	case "":
		host, port, ok := strings.Cut(listen, ":")
		var n int
		if _, err := fmt.Sscan(port, &n); ok && err == nil && n > 0 {
			httpAddr = fmt.Sprintf("%s:%d", host, n+1000)
		}
	case "off":
		httpAddr = ""
	}
	tlsFiles, err := f.tls.files()
	if err != nil {
		return err
	}
	traceCfg, err := f.trace.config()
	if err != nil {
		return err
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	protocol := deploy.DefaultProtocol()
	protocol.PrepareTimeout = f.prepareTimeout
	protocol.CommitRetry = f.commitRetry
	protocol.LockTimeout = f.lockTimeout
	protocol.Deadlock = policy
	protocol.MaxAttempts = f.maxAttempts
	protocol.DedupWindow = f.dedupWindow
	protocol.DedupCount = f.dedupCount
	protocol.SnapshotEvery = f.snapshotEvery
	protocol.SnapshotLogBytes = f.snapshotBytes
	if replicas != nil && !f.snapshotBytesSet {
		protocol.SnapshotLogBytes = coordinator.DefaultReplicaSnapshotLogBytes
	}
	if err := protocol.Validate(); err != nil {
		return usagef("%v", err)
	}
	common := server.Common{
		ID: name, Listen: listen, HTTP: httpAddr, DataDir: f.dataDir, Peers: peers, TLS: tlsFiles,
		MaxRequestBytes: f.maxRequest, Grace: f.grace, Logger: log, Pprof: f.pprof,
		Insecure: f.insecure, HTTPTokens: f.httpTokens, MaxConns: f.maxConns,
		HandshakeTimeout: f.handshakeTimeout, IdleTimeout: f.idleTimeout,
		Trace: traceCfg,
	}
	common.Net.CallTimeout = f.callTimeout
	common.Net.Streams = f.streams

	type proc interface {
		Addr() string
		HTTPAddr() string
		Shutdown(context.Context) error
		Err() <-chan error
	}
	var p proc
	if name == twopc.CoordinatorID {
		c, err := server.StartCoordinator(server.CoordinatorConfig{Common: common, Participants: f.participants, Protocol: protocol,
			ReplicaID: f.replicaID, Replicas: replicas, RaftTick: f.raftTick, ElectionTicks: f.electionTicks})
		if err != nil {
			return err
		}
		p = c
	} else {
		var world *purchase.World
		if f.world != "" {
			data, err := os.ReadFile(f.world)
			if err != nil {
				return usagef("--world: %v", err)
			}
			w, err := purchase.ParseWorld(data)
			if err != nil {
				return usagef("--world %s: %v", f.world, err)
			}
			world = &w
		}
		open, closeStore, err := builtinService(name, world, f.store)
		if err != nil {
			return err
		}
		defer closeStore()
		s, err := server.StartParticipant(server.ParticipantConfig{Common: common, OpenService: open, Protocol: protocol})
		if err != nil {
			return err
		}
		p = s
	}
	log.Info("serving", "node", name, "grpc", p.Addr(), "http", p.HTTPAddr(), "data_dir", f.dataDir, "tls", tlsFiles != nil)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("draining", "signal", s.String())
	case err := <-p.Err():
		log.Error("stopped on its own; exiting so that a restart recovers from the log", "err", err)
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), f.grace+5*time.Second)
	defer cancel()
	return p.Shutdown(sctx)
}

// parseReplicas reads --replicas: ID=HOST:PORT, comma-separated, ids from 1,
// each id and address once.
func parseReplicas(s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		idText, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || addr == "" {
			return nil, fmt.Errorf("%q: want ID=HOST:PORT", part)
		}
		var id uint64
		if _, err := fmt.Sscan(idText, &id); err != nil || id == 0 {
			return nil, fmt.Errorf("%q: the id must be a number from 1", part)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("replica %d is listed twice", id)
		}
		if seen[addr] {
			return nil, fmt.Errorf("address %s is listed twice", addr)
		}
		seen[addr] = true
		out[id] = addr
	}
	if len(out) < 1 {
		return nil, errors.New("no replica")
	}
	return out, nil
}
