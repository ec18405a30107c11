// Package server runs one dtx component — the coordinator or one
// participant service — as a networked process: a gRPC server (the
// dtx.v1.Transport protocol, the coordinator's client API, grpc.health.v1)
// and an HTTP server (health, readiness, Prometheus metrics, the JSON API,
// the state of a service). `dtx serve` is a thin wrapper around it, and a
// user's own service uses StartParticipant with its own Resource (see
// examples/shipping).
//
// Every process recovers from its log when it starts, and Shutdown drains it
// gracefully: it stops taking new work (new submissions at the coordinator,
// new PREPAREs at a service), lets what is in flight finish for up to
// Common.Grace, then closes its log (which syncs it). Whatever is still
// unfinished then is finished by recovery at the next start.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/transport/grpcnet"
)

// Common is the configuration every server process shares.
type Common struct {
	// ID is the node's name on the network: "coordinator", "inventory", ...
	ID string
	// Listen is the gRPC address (host:port; port 0 picks a free one).
	Listen string
	// HTTP is the address of the HTTP endpoints; empty means none.
	HTTP string
	// DataDir holds the process's log (and a service's world.json). One
	// process per directory (DIR/LOCK).
	DataDir string
	// Peers maps the nodes this one sends to onto their gRPC addresses.
	Peers map[string]string
	// TLS, if set, turns on mutual TLS and authorization: every gRPC peer
	// presents a certificate signed by the CA, whose dtx:// identity (see
	// package auth) says what it may do; this process's own certificate
	// must name this node. The HTTP endpoints are served over HTTPS and
	// need a client certificate or a bearer token (HTTPTokens), except
	// /healthz and /readyz.
	TLS *TLSFiles
	// Insecure allows serving without TLS on an address that is not
	// loopback. Without TLS nobody is authenticated: the role tables still
	// hold, but a message's sender is taken on its word.
	Insecure bool
	// HTTPTokens, if set, is a bearer token file (auth.LoadTokens): HTTP
	// callers may authenticate with "Authorization: Bearer TOKEN" instead
	// of a client certificate. With it set and no TLS, HTTP requests need
	// a token too.
	HTTPTokens string
	// MaxConns bounds the connections each listener (gRPC, HTTP) holds at
	// once; past it new connections wait in the kernel's backlog. 0: a
	// quarter of the process's file descriptor limit, at most 4096.
	MaxConns int
	// HandshakeTimeout bounds a new connection's TLS handshake and first
	// bytes (default 5s): a connection that says nothing is closed.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a gRPC connection with no call for this long, and
	// an idle HTTP keep-alive connection (default 2m).
	IdleTimeout time.Duration
	// MaxStreams bounds the concurrent calls and streams on one gRPC
	// connection (default 1024).
	MaxStreams uint32
	// Net tunes the transport (timeouts, queues, batches, backoff); zero
	// fields take grpcnet.DefaultConfig's values.
	Net grpcnet.Config
	// MaxRequestBytes bounds an HTTP request body and a client API call
	// (default 64 KiB).
	MaxRequestBytes int
	// Grace bounds the graceful part of Shutdown (default 10s).
	Grace time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on the HTTP address.
	Pprof bool
	// Trace says whether and where the process exports the spans of the
	// transactions it takes part in (package tracing). Zero: off.
	Trace tracing.Config
	// Tracing, if set, is a span pipeline of the caller's, used instead of
	// Trace (tests, an embedding program); the caller shuts it down.
	Tracing *tracing.Provider
	Logger  *slog.Logger
}

// TLSFiles names the PEM files of mutual TLS.
type TLSFiles struct {
	Cert, Key string // this process's certificate and key
	CA        string // the CA that signs every component's certificate
}

// Identity returns the dtx identity named by the certificate file.
func (f *TLSFiles) Identity() (auth.Identity, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return auth.Identity{}, fmt.Errorf("server: TLS key pair: %w", err)
	}
	return auth.FromCert(cert.Leaf)
}

// Load returns the server and client TLS configurations.
func (f *TLSFiles) Load() (srv, cli *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("server: TLS key pair: %w", err)
	}
	if cert.Leaf == nil || time.Now().After(cert.Leaf.NotAfter) {
		return nil, nil, fmt.Errorf("server: TLS certificate %s has expired", f.Cert)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("server: TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("server: TLS CA %s: no certificate found", f.CA)
	}
	srv = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
	cli = &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}
	return srv, cli, nil
}

func (c *Common) withDefaults() error {
	if c.ID == "" || c.Listen == "" || c.DataDir == "" {
		return errors.New("server: ID, Listen and DataDir are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("node", c.ID)
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 64 << 10
	}
	if c.Grace <= 0 {
		c.Grace = 10 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 1024
	}
	if c.MaxConns <= 0 {
		c.MaxConns = defaultMaxConns()
	}
	if c.TLS == nil && !c.Insecure {
		for _, a := range []string{c.Listen, c.HTTP} {
			if a != "" && !isLoopback(a) {
				return fmt.Errorf("server: %s is not a loopback address and TLS is off: nobody would be authenticated; give TLS files, or --insecure to serve plaintext anyway", a)
			}
		}
		for name, a := range c.Peers {
			if !isLoopback(a) {
				return fmt.Errorf("server: peer %s at %s is not on loopback and TLS is off: PREPAREs (with the purchase) would cross the network in plaintext; give TLS files, or --insecure", name, a)
			}
		}
	}
	d := grpcnet.DefaultConfig()
	n := &c.Net
	if n.CallTimeout == 0 {
		n.CallTimeout = d.CallTimeout
	}
	if n.QueueSize == 0 {
		n.QueueSize = d.QueueSize
	}
	if n.MaxBatch == 0 {
		n.MaxBatch = d.MaxBatch
	}
	if n.Streams == 0 {
		n.Streams = d.Streams
	}
	if n.BackoffBase == 0 {
		n.BackoffBase = d.BackoffBase
	}
	if n.BackoffMax == 0 {
		n.BackoffMax = max(d.BackoffMax, n.BackoffBase)
	}
	if n.MaxMsgBytes == 0 {
		n.MaxMsgBytes = d.MaxMsgBytes
	}
	if n.InboxWait == 0 {
		n.InboxWait = d.InboxWait
	}
	n.Peers = c.Peers
	n.Logger = c.Logger
	return nil
}

// base is what every server process has: the directory lock, the network,
// the gRPC and HTTP servers, health, metrics.
type base struct {
	cfg      Common
	log      *slog.Logger
	lock     *os.File
	net      *grpcnet.Network
	grpc     *grpc.Server
	health   *health.Server
	http     *http.Server
	lis      net.Listener
	hlis     net.Listener
	reg      *prometheus.Registry
	mux      *http.ServeMux
	tlsCli   *tls.Config
	draining atomic.Bool
	served   bool
	wg       sync.WaitGroup
	metrics  *netMetrics
	guard    *guard
	tracing  *tracing.Provider // nil: tracing off
	admin    adminState
}

func newBase(cfg Common) (*base, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	b := &base{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry(), mux: http.NewServeMux()}
	ok := false
	defer func() {
		if !ok {
			b.closeAll()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	lock, err := deploy.LockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	b.lock = lock
	if err := b.startTracing(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	var creds []grpc.ServerOption
	b.guard = &guard{self: cfg.ID, tls: cfg.TLS != nil, senders: map[string]bool{}}
	var httpsCfg *tls.Config
	if cfg.TLS != nil {
		srv, cli, err := cfg.TLS.Load()
		if err != nil {
			return nil, err
		}
		id, err := auth.FromCert(srv.Certificates[0].Leaf)
		if err != nil {
			return nil, fmt.Errorf("server: own certificate %s: %w", cfg.TLS.Cert, err)
		}
		if id.Node() != cfg.ID {
			return nil, fmt.Errorf("server: own certificate %s is for %s, but this process is node %q", cfg.TLS.Cert, id, cfg.ID)
		}
		b.tlsCli = cli
		cfg.Net.TLS = cli
		cfg.Net.PeerTLS = func(peer string) *tls.Config { return peerTLS(cli, peer) }
		creds = append(creds, grpc.Creds(credentials.NewTLS(srv)))
		httpsCfg = srv.Clone()
		httpsCfg.ClientAuth = tls.VerifyClientCertIfGiven // or a bearer token
	} else if !isLoopback(cfg.Listen) || (cfg.HTTP != "" && !isLoopback(cfg.HTTP)) {
		b.log.Warn("serving WITHOUT TLS on a non-loopback address (--insecure): nobody is authenticated")
	} else {
		b.log.Warn("serving without TLS: loopback only, nobody is authenticated")
	}
	if cfg.HTTPTokens != "" {
		t, err := auth.LoadTokens(cfg.HTTPTokens)
		if err != nil {
			return nil, err
		}
		b.guard.tokens = t
	}
	cfg.Net.Authorize = b.guard.message
	b.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b.metrics = newNetMetrics(b.reg)
	cfg.Net.OnCall = b.metrics.onCall
	b.net, err = grpcnet.New(cfg.Net)
	if err != nil {
		return nil, err
	}
	b.metrics.watch(b.reg, b.net)
	for kind, f := range map[string]func() float64{
		"call":    func() float64 { return float64(b.guard.deniedCalls.Load()) },
		"message": func() float64 { return float64(b.guard.deniedMsgs.Load()) },
		"http":    func() float64 { return float64(b.guard.deniedHTTP.Load()) },
	} {
		b.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dtx_unauthorized_total",
			Help: "Requests refused by authorization: gRPC calls, protocol messages, HTTP requests.", ConstLabels: prometheus.Labels{"kind": kind}}, f))
	}
	b.lis, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}
	b.lis = netutil.LimitListener(b.lis, cfg.MaxConns)
	if cfg.HTTP != "" {
		b.hlis, err = net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return nil, fmt.Errorf("server: listen %s: %w", cfg.HTTP, err)
		}
		b.hlis = netutil.LimitListener(b.hlis, cfg.MaxConns)
		if httpsCfg != nil {
			b.hlis = tls.NewListener(b.hlis, httpsCfg)
		}
	}
	opts := append(creds, b.net.ServerOptions()...)
	opts = append(opts,
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.MaxConcurrentStreams(cfg.MaxStreams),
		grpc.InTapHandle(b.guard.tap),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.IdleTimeout, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: 30 * time.Second, Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(b.limitClientCalls))
	b.grpc = grpc.NewServer(opts...)
	b.registerServices()
	b.health = health.NewServer()
	healthpb.RegisterHealthServer(b.grpc, b.health)
	b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	b.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	b.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if b.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	b.handle("GET /metrics", auth.ActOperate, promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{Registry: b.reg}).ServeHTTP)
	b.handle("GET /v1/net", auth.ActOperate, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, b.net.Stats()) })
	if cfg.Pprof {
		b.handle("/debug/pprof/", auth.ActOperate, pprof.Index)
		b.handle("/debug/pprof/cmdline", auth.ActOperate, pprof.Cmdline)
		b.handle("/debug/pprof/profile", auth.ActOperate, pprof.Profile)
		b.handle("/debug/pprof/symbol", auth.ActOperate, pprof.Symbol)
		b.handle("/debug/pprof/trace", auth.ActOperate, pprof.Trace)
	}
	ok = true
	return b, nil
}

// handle serves pattern on the HTTP mux behind the guard's check of action
// a (0: open to all).
func (b *base) handle(pattern string, a auth.Action, h http.HandlerFunc) {
	b.mux.HandleFunc(pattern, b.guard.http(a, h))
}

// defaultMaxConns is a quarter of the file descriptor limit (a listener
// must leave room for the logs, the other listener and outgoing
// connections), at least 16 and at most 4096.
func defaultMaxConns() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	return int(min(max(lim.Cur/4, 16), 4096))
}

// limitClientCalls refuses client API calls larger than MaxRequestBytes
// (the transport's batches have their own, larger, limit).
func (b *base) limitClientCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/dtx.v1.Coordinator/") {
		if m, ok := req.(proto.Message); ok && proto.Size(m) > b.cfg.MaxRequestBytes {
			return nil, status.Errorf(codes.InvalidArgument, "request of %d bytes is over the limit of %d", proto.Size(m), b.cfg.MaxRequestBytes)
		}
	}
	return next(ctx, req)
}

// serve starts the gRPC and HTTP servers.
func (b *base) serve() {
	b.served = true
	b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.grpc.Serve(b.lis); err != nil {
			b.log.Error("grpc server stopped", "err", err)
		}
	}()
	if b.hlis != nil {
		b.http = &http.Server{
			Handler:           http.MaxBytesHandler(b.mux, int64(b.cfg.MaxRequestBytes)),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       b.cfg.IdleTimeout,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := b.http.Serve(b.hlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("http server stopped", "err", err)
			}
		}()
	}
}

// startDrain marks the process as draining: readiness and gRPC health say
// NOT_SERVING.
func (b *base) startDrain() {
	b.draining.Store(true)
	b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
}

// stopServers stops the gRPC server (gracefully, within d) and the HTTP one.
func (b *base) stopServers(d time.Duration) {
	done := make(chan struct{})
	go func() { b.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		b.grpc.Stop()
	}
	if b.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		b.http.Shutdown(ctx)
		cancel()
	}
	b.wg.Wait()
}

// closeAll releases what newBase acquired (for a failed start, and at the
// end of Shutdown).
func (b *base) closeAll() {
	if b.net != nil {
		b.net.Close()
	}
	if !b.served {
		if b.lis != nil {
			b.lis.Close()
		}
		if b.hlis != nil {
			b.hlis.Close()
		}
	}
	if b.tracing != nil && b.cfg.Tracing == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := b.tracing.Shutdown(ctx); err != nil {
			b.log.Warn("tracing: flushing spans", "err", err)
		}
		cancel()
		b.tracing = nil
	}
	if b.lock != nil {
		b.lock.Close()
	}
}

// Addr returns the gRPC address the process listens on.
func (b *base) Addr() string { return b.lis.Addr().String() }

// HTTPAddr returns the HTTP address ("" if none).
func (b *base) HTTPAddr() string {
	if b.hlis == nil {
		return ""
	}
	return b.hlis.Addr().String()
}

// NetStats returns the transport's counters.
func (b *base) NetStats() grpcnet.Stats { return b.net.Stats() }

// waitUntil polls cond every 5ms until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}
