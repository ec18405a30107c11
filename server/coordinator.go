package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// CoordinatorConfig configures a coordinator process.
type CoordinatorConfig struct {
	Common
	// Participants are the nodes a purchase has a branch at, in PREPARE
	// order (default inventory, payment, order). Every branch carries the
	// purchase's binary form; a user's own participant (such as
	// examples/shipping) joins purchases by being listed here.
	Participants []string
	// Protocol holds the protocol settings: Tick, PrepareTimeout,
	// CommitRetry, MaxInflight, MaxAttempts, Deadlock, DetectEvery.
	Protocol deploy.Protocol
	// SubmitWait bounds how long an HTTP submission waits for its outcome
	// (default 30s); past it the reply is PENDING and the caller asks again.
	SubmitWait time.Duration
	// ReplicaID and Replicas (id → gRPC address, this one's included) make
	// the process one replica of a replicated coordinator (package
	// replica); 0 and nil: the single coordinator.
	ReplicaID uint64
	Replicas  map[uint64]string
	// RaftTick and ElectionTicks pace the replicas' raft (defaults 10ms
	// and 10: a leader that is gone is replaced after 100–200ms).
	RaftTick      time.Duration
	ElectionTicks int
}

// coordBackend is what the process serves clients with: the coordinator
// itself, or the replica that leads (replicaBackend).
type coordBackend interface {
	Submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error)
	SubmitAsync(ps []coordinator.Proposal, done func(i int, o twopc.Outcome, err error))
	Lookup(ctx context.Context, tx string) (coordinator.Known, twopc.Outcome, error)
	Status(ctx context.Context) (coordinator.Status, error)
	Done() <-chan struct{}
	Close() error
	// The operator's view (admin API, console).
	Transactions(ctx context.Context, limit int) (txs []twopc.TxInfo, inFlight, inDoubt int, err error)
	WaitGraph(ctx context.Context) ([]twopc.WaitEdge, error)
	Retry(ctx context.Context, tx string) ([]string, error)
	Records(tx string, fn func(seq uint64, r twopc.Record)) error
}

// Coordinator is a running coordinator process.
type Coordinator struct {
	*base
	cfg     CoordinatorConfig
	coord   coordBackend
	rep     *replicaBackend // nil for the single coordinator
	metrics *coordMetrics
	adm     coordAdmin
	runErr  chan error

	mu       sync.Mutex
	inflight int // client calls being served
	idle     *sync.Cond
	drain    chan struct{} // closed when Shutdown starts
}

// StartCoordinator opens (recovering) the coordinator's log under
// DataDir/coordinator and starts serving.
func StartCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if len(cfg.Participants) == 0 {
		cfg.Participants = services.IDs()
	}
	if cfg.Common.ID == "" {
		cfg.Common.ID = twopc.CoordinatorID
	}
	if cfg.SubmitWait <= 0 {
		cfg.SubmitWait = 30 * time.Second
	}
	if cfg.Protocol.Tick == 0 {
		p := deploy.DefaultProtocol()
		p.Deadlock = cfg.Protocol.Deadlock
		cfg.Protocol = p
	}
	if cfg.Protocol.Deadlock == 0 {
		cfg.Protocol.Deadlock = twopc.DeadlockDetect
	}
	if err := cfg.Protocol.Validate(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	for _, p := range cfg.Participants {
		if _, ok := cfg.Peers[p]; !ok {
			return nil, fmt.Errorf("server: participant %s has no --peer address", p)
		}
	}
	b, err := newBase(cfg.Common)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{base: b, cfg: cfg, runErr: make(chan error, 1), drain: make(chan struct{})}
	c.idle = sync.NewCond(&c.mu)
	c.metrics = newCoordMetrics(b.reg, cfg.Participants)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var wm *walMetrics
	var log *wal.Log
	wm = newWALMetrics(b.reg, func() wal.Stats {
		if log == nil {
			return wal.Stats{}
		}
		return log.Stats()
	})
	logCfg := wal.DefaultConfig("")
	logCfg.FS = wm.fs()
	cc := deploy.CoordinatorConfig(cfg.DataDir, cfg.Protocol, b.net, logCfg)
	cc.Machine.ID = b.cfg.ID
	cc.Machine.Rand = rng.Uint64
	cc.OnRecord = c.onRecord
	cc.OnRecovered = func(o twopc.Outcome) {
		b.log.Info("recovered transaction", "tx", o.Tx, "committed", o.Committed, "reason", o.Reason)
	}
	cc.Logger = b.log
	if b.tracing != nil {
		cc.Tracer = tracing.NewCoordinator(b.tracing, b.cfg.ID)
	}
	if cfg.ReplicaID != 0 {
		var rmu sync.Mutex
		cc.Machine.Rand = func() uint64 { rmu.Lock(); defer rmu.Unlock(); return rng.Uint64() }
		c.rep, err = startReplica(c, cc, logCfg)
		if err != nil {
			b.closeAll()
			return nil, err
		}
		c.coord = c.rep
		log = c.rep.walLog()
	} else {
		co, err := coordinator.Open(cc)
		if err != nil {
			b.closeAll()
			return nil, err
		}
		c.coord = co
		log = co.Log()
	}
	b.reg.MustRegister(newGaugeFunc("dtx_inflight_transactions", "Transactions the coordinator has not finished (collecting votes or awaiting ACKs).", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.coord.Status(ctx)
		if err != nil {
			return -1
		}
		return float64(st.Inflight)
	}))
	b.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dtx_shed_messages_total",
		Help: "Messages about transactions never heard of, dropped past the sending participant's presumed-abort budget."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.coord.Status(ctx)
		if err != nil {
			return 0
		}
		return float64(st.Shed)
	}))
	if c.rep == nil {
		co := c.coord.(*coordinator.Coordinator)
		snapshotMetrics(b.reg, func() snapStats {
			st := co.SnapshotStats()
			return snapStats{Taken: st.Taken, LastBytes: st.LastBytes, TableBytes: st.LastTableBytes, MaxPause: st.MaxPause,
				LoadTook: st.LoadTook, ReplayTook: st.ReplayTook}
		})
		go func() { c.runErr <- co.Run(context.Background()) }()
		st, err := c.coord.Status(context.Background())
		if err != nil {
			c.coord.Close()
			b.closeAll()
			return nil, err
		}
		b.log.Info("coordinator recovered", "epoch", st.Epoch, "unfinished", st.Inflight, "participants", cfg.Participants)
	} else {
		rep := c.rep.r
		snapshotMetrics(b.reg, func() snapStats {
			st := rep.SnapshotStats()
			return snapStats{Taken: st.Taken, LastBytes: st.LastBytes, MaxPause: st.MaxPause}
		})
		go func() { c.runErr <- c.rep.run() }()
		b.log.Info("coordinator replica started", "replica", cfg.ReplicaID, "replicas", cfg.Replicas, "participants", cfg.Participants)
	}
	// Every participant the coordinator may send to may answer: those of
	// purchases, and a user's own ones that SubmitTx names. The machine
	// checks that each speaks only of its own branches.
	for p := range cfg.Peers {
		if p != b.cfg.ID {
			b.guard.senders[p] = true
		}
	}
	dtxv1.RegisterCoordinatorServer(b.grpc, &coordAPI{c: c})
	b.handle("POST /v1/purchases", auth.ActSubmit, c.httpSubmit)
	b.handle("GET /v1/transactions/{id}", auth.ActOutcome, c.httpOutcome)
	b.handle("GET /v1/status", auth.ActOperate, c.httpStatus)
	c.startAdmin()
	b.serve()
	return c, nil
}

// Err returns a channel that yields the coordinator loop's fatal error (a
// failed log) if it stops on its own; the process should exit and recover.
func (c *Coordinator) Err() <-chan error { return c.runErr }

// Status returns the epoch and the number of unfinished transactions.
func (c *Coordinator) Status(ctx context.Context) (coordinator.Status, error) {
	return c.coord.Status(ctx)
}

// enter admits one client call unless the process is draining.
func (c *Coordinator) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining.Load() {
		return false
	}
	c.inflight++
	return true
}

func (c *Coordinator) leave() {
	c.mu.Lock()
	c.inflight--
	if c.inflight == 0 {
		c.idle.Broadcast()
	}
	c.mu.Unlock()
}

var errDraining = errors.New("coordinator is shutting down; retry with the same transaction_id")

// submit runs one transaction for a client.
func (c *Coordinator) submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	if !c.enter() {
		return twopc.Outcome{}, errDraining
	}
	defer c.leave()
	start := time.Now()
	o, err := c.coord.Submit(ctx, tx, branches)
	if err != nil {
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		case errors.Is(err, twopc.ErrBusy), errors.Is(err, twopc.ErrInvalidTx), errors.Is(err, errDraining):
			// The caller is told; a flood of these must not flood the log.
			c.log.Debug("submit refused", "tx", tx, "err", err)
		default:
			c.log.Warn("submit failed", "tx", tx, "err", err)
		}
		return o, err
	}
	c.metrics.submit.Observe(time.Since(start).Seconds())
	if o.Duplicate {
		c.metrics.dups.Inc()
	}
	c.log.Debug("outcome", "tx", tx, "committed", o.Committed, "reason", o.Reason, "duplicate", o.Duplicate)
	return o, nil
}

// purchaseBranches checks a binary purchase and makes its branches.
func (c *Coordinator) purchaseBranches(op []byte) (string, []twopc.Branch, error) {
	var req purchase.Request
	if err := req.UnmarshalBinary(op); err != nil {
		return "", nil, fmt.Errorf("op: %w", err)
	}
	if err := req.Validate(); err != nil {
		return "", nil, err
	}
	branches := make([]twopc.Branch, len(c.cfg.Participants))
	for i, p := range c.cfg.Participants {
		branches[i] = twopc.Branch{Node: p, Op: op}
	}
	return req.TxID, branches, nil
}

// decodeLine decodes one JSON Lines request into its binary form.
func decodeLine(line []byte) (tx string, op []byte, err error) {
	req, err := purchase.DecodeLine(bytes.TrimSpace(line))
	if err != nil {
		return req.TxID, nil, err
	}
	op, err = req.MarshalBinary()
	return req.TxID, op, err
}

// Shutdown drains the coordinator: new submissions are refused at once;
// calls in progress and unfinished transactions get up to Grace to finish;
// then the servers stop and the log is closed (synced). Transactions still
// unfinished are recovered at the next start.
func (c *Coordinator) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.draining.Load() {
		close(c.drain)
	}
	c.startDrain()
	c.mu.Unlock()
	grace := c.cfg.Grace
	if d, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(d))
	}
	deadline := time.Now().Add(grace)
	idle := make(chan struct{})
	go func() {
		c.mu.Lock()
		for c.inflight > 0 {
			c.idle.Wait()
		}
		c.mu.Unlock()
		close(idle)
	}()
	select {
	case <-idle:
	case <-time.After(time.Until(deadline)):
		c.log.Warn("shutdown: client calls still in progress; they will get UNAVAILABLE")
	}
	quiet := waitUntil(time.Until(deadline), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.coord.Status(ctx)
		return err != nil || st.Inflight == 0
	})
	if !quiet {
		c.log.Warn("shutdown: unfinished transactions are left to recovery")
	}
	if c.rep != nil {
		// A replica stops raft first: the streams of its peers end with
		// it, and the servers then stop without waiting for them.
		c.rep.Close()
	}
	c.stopServers(max(time.Until(deadline), time.Second))
	err := c.coord.Close()
	c.closeAll()
	c.log.Info("coordinator stopped", "err", err)
	return err
}

// coordAPI is the gRPC client API.
type coordAPI struct {
	dtxv1.UnimplementedCoordinatorServer
	c *Coordinator
}

func (a *coordAPI) Submit(ctx context.Context, r *dtxv1.PurchaseRequest) (*dtxv1.TxOutcome, error) {
	tx, branches, err := a.c.purchaseRequest(r)
	if err != nil {
		return nil, err
	}
	o, err := a.c.submit(a.c.grpcTraceParent(ctx), tx, branches)
	return toProtoOutcome(tx, o, err)
}

// purchaseRequest checks a client's purchase and makes its branches; its
// error is an INVALID_ARGUMENT status naming what is wrong.
func (c *Coordinator) purchaseRequest(r *dtxv1.PurchaseRequest) (string, []twopc.Branch, error) {
	var (
		op  []byte
		err error
	)
	switch {
	case r.GetJsonLine() != "" && len(r.GetOp()) > 0:
		return "", nil, status.Error(codes.InvalidArgument, "set json_line or op, not both")
	case r.GetJsonLine() != "":
		_, op, err = decodeLine([]byte(r.GetJsonLine()))
	case len(r.GetOp()) > 0:
		op = r.GetOp()
	default:
		return "", nil, status.Error(codes.InvalidArgument, "empty request: set json_line or op")
	}
	if err != nil {
		return "", nil, status.Error(codes.InvalidArgument, err.Error())
	}
	tx, branches, err := c.purchaseBranches(op)
	if err != nil {
		return "", nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return tx, branches, nil
}

func (a *coordAPI) SubmitTx(ctx context.Context, r *dtxv1.TxRequest) (*dtxv1.TxOutcome, error) {
	branches, err := a.c.txBranches(r)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	o, err := a.c.submit(a.c.grpcTraceParent(ctx), r.GetTransactionId(), branches)
	return toProtoOutcome(r.GetTransactionId(), o, err)
}

// txBranches checks a SubmitTx request and makes its branches. Branches
// go to known participants only, once each. The participants of purchases
// (Participants) take whole purchases only: a request that names any of
// them must be exactly what Submit would make of one purchase (a branch at
// each, the same valid purchase in each, for this transaction id), so that
// nobody can commit stock without its payment.
func (c *Coordinator) txBranches(r *dtxv1.TxRequest) ([]twopc.Branch, error) {
	tx := r.GetTransactionId()
	if err := twopc.ValidTxID(tx); err != nil {
		return nil, fmt.Errorf("transaction_id: %w", err)
	}
	in := r.GetBranches()
	if len(in) == 0 {
		return nil, errors.New("at least one branch is required")
	}
	branches := make([]twopc.Branch, len(in))
	purchaseBranches := 0
	for i, b := range in {
		node := b.GetParticipant()
		if _, ok := c.cfg.Peers[node]; !ok || node == c.cfg.ID {
			return nil, fmt.Errorf("branch %d: unknown participant %q", i, node)
		}
		for _, prev := range branches[:i] {
			if prev.Node == node {
				return nil, fmt.Errorf("branch %d: participant %q has two branches", i, node)
			}
		}
		if slices.Contains(c.cfg.Participants, node) {
			purchaseBranches++
		}
		branches[i] = twopc.Branch{Node: node, Op: b.GetOp()}
	}
	if purchaseBranches == 0 {
		return branches, nil
	}
	whole := fmt.Sprintf("branches at %s take whole purchases only: one branch at each of them and no other, all with the same purchase for this transaction_id (or use Submit)", strings.Join(c.cfg.Participants, ", "))
	if purchaseBranches != len(c.cfg.Participants) || len(branches) != purchaseBranches {
		return nil, errors.New(whole)
	}
	op := branches[0].Op
	for _, b := range branches[1:] {
		if !bytes.Equal(b.Op, op) {
			return nil, errors.New(whole)
		}
	}
	ptx, made, err := c.purchaseBranches(op)
	if err != nil {
		return nil, fmt.Errorf("purchase: %w", err)
	}
	if ptx != tx {
		return nil, fmt.Errorf("%s; the purchase is for %q, not %q", whole, ptx, tx)
	}
	return made, nil
}

func (a *coordAPI) Outcome(ctx context.Context, r *dtxv1.OutcomeRequest) (*dtxv1.TxOutcome, error) {
	tx := r.GetTransactionId()
	if tx == "" {
		return nil, status.Error(codes.InvalidArgument, "transaction_id is required")
	}
	known, o, err := a.c.coord.Lookup(ctx, tx)
	if err != nil {
		return nil, grpcError(err)
	}
	out := &dtxv1.TxOutcome{TransactionId: tx}
	switch known {
	case coordinator.KnownUnknown:
		out.Status = dtxv1.Status_STATUS_UNKNOWN
	case coordinator.KnownExpired:
		return nil, status.Error(codes.FailedPrecondition, expiredMessage(tx))
	case coordinator.KnownPending:
		out.Status = dtxv1.Status_STATUS_PENDING
	default:
		out.Status, out.Reason = statusOf(o)
	}
	return out, nil
}

// expiredMessage says what an expired id means to whoever asks about it.
func expiredMessage(tx string) string {
	return fmt.Sprintf("outcome expired: transaction %q was decided, but its outcome is past the coordinator's retention window (--dedup-window), so whether it committed is no longer known here; the id is not run again (use a new id)", tx)
}

func statusOf(o twopc.Outcome) (dtxv1.Status, string) {
	if o.Committed {
		return dtxv1.Status_STATUS_COMMITTED, ""
	}
	return dtxv1.Status_STATUS_ROLLED_BACK, o.Reason
}

func toProtoOutcome(tx string, o twopc.Outcome, err error) (*dtxv1.TxOutcome, error) {
	if err != nil {
		return nil, grpcError(err)
	}
	st, reason := statusOf(o)
	return &dtxv1.TxOutcome{TransactionId: tx, Status: st, Reason: reason, Duplicate: o.Duplicate}, nil
}

// grpcError maps an error to a status: what a client may retry (with the
// same transaction id) is UNAVAILABLE, RESOURCE_EXHAUSTED or
// DEADLINE_EXCEEDED.
func grpcError(err error) error {
	var nl *notLeader
	switch {
	case errors.As(err, &nl):
		return status.Error(codes.Unavailable, nl.Error())
	case errors.Is(err, errDraining), errors.Is(err, coordinator.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, twopc.ErrBusy):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, twopc.ErrInvalidTx):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, twopc.ErrOutcomeExpired):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "no outcome yet: ask again with the same transaction_id")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// HTTP API.

// httpOutcomeBody is the JSON of an outcome.
type httpOutcomeBody struct {
	TxID      string `json:"transaction_id,omitempty"`
	Status    string `json:"status"` // COMMITTED, ROLLED_BACK, PENDING, UNKNOWN, REJECTED, EXPIRED
	Reason    string `json:"reason,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"`
}

func statusName(s dtxv1.Status) string {
	switch s {
	case dtxv1.Status_STATUS_COMMITTED:
		return "COMMITTED"
	case dtxv1.Status_STATUS_ROLLED_BACK:
		return "ROLLED_BACK"
	case dtxv1.Status_STATUS_PENDING:
		return "PENDING"
	}
	return "UNKNOWN"
}

func (c *Coordinator) httpSubmit(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, httpOutcomeBody{Status: "REJECTED", Error: err.Error()})
		return
	}
	tx, op, err := decodeLine(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, httpOutcomeBody{TxID: tx, Status: "REJECTED", Reason: err.Error()})
		return
	}
	tx, branches, err := c.purchaseBranches(op)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, httpOutcomeBody{TxID: tx, Status: "REJECTED", Reason: err.Error()})
		return
	}
	wait := c.cfg.SubmitWait
	if s := r.URL.Query().Get("wait"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			wait = min(d, c.cfg.SubmitWait)
		}
	}
	ctx, cancel := context.WithTimeout(c.httpTraceParent(r), wait)
	defer cancel()
	o, err := c.submit(ctx, tx, branches)
	if err != nil {
		code, st := http.StatusInternalServerError, "UNKNOWN"
		switch status.Code(grpcError(err)) {
		case codes.Unavailable:
			code = http.StatusServiceUnavailable
		case codes.ResourceExhausted:
			code = http.StatusTooManyRequests
		case codes.DeadlineExceeded, codes.Canceled:
			code, st = http.StatusAccepted, "PENDING"
		case codes.InvalidArgument:
			code, st = http.StatusBadRequest, "REJECTED"
		}
		writeJSON(w, code, httpOutcomeBody{TxID: tx, Status: st, Error: err.Error()})
		return
	}
	s, reason := statusOf(o)
	writeJSON(w, http.StatusOK, httpOutcomeBody{TxID: tx, Status: statusName(s), Reason: reason, Duplicate: o.Duplicate})
}

func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	return buf.Bytes(), nil
}

func (c *Coordinator) httpOutcome(w http.ResponseWriter, r *http.Request) {
	tx := r.PathValue("id")
	out, err := (&coordAPI{c: c}).Outcome(r.Context(), &dtxv1.OutcomeRequest{TransactionId: tx})
	if err != nil {
		code, st := http.StatusServiceUnavailable, "UNKNOWN"
		switch status.Code(err) {
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.FailedPrecondition:
			code, st = http.StatusGone, "EXPIRED"
		}
		writeJSON(w, code, httpOutcomeBody{TxID: tx, Status: st, Error: status.Convert(err).Message()})
		return
	}
	code := http.StatusOK
	if out.Status == dtxv1.Status_STATUS_UNKNOWN {
		code = http.StatusNotFound
	}
	writeJSON(w, code, httpOutcomeBody{TxID: tx, Status: statusName(out.Status), Reason: out.Reason})
}

// CoordStatusBody is the JSON of GET /v1/status on the coordinator.
type CoordStatusBody = deploy.CoordStatus

func (c *Coordinator) httpStatus(w http.ResponseWriter, r *http.Request) {
	st, err := c.coord.Status(r.Context())
	var rs *deploy.ReplicaStatus
	if c.rep != nil {
		// A follower has no coordinator of its own: its raft view only.
		rs = c.rep.status()
		var nl *notLeader
		if errors.As(err, &nl) {
			st, err = coordinator.Status{}, nil
		}
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	ns := c.net.Stats()
	writeJSON(w, http.StatusOK, CoordStatusBody{
		Epoch: st.Epoch, Inflight: st.Inflight, Draining: c.draining.Load(), Participants: c.cfg.Participants,
		Shed: st.Shed, Unauthorized: ns.Unauthorized,
		Calls: ns.TxCalls, MessagesPerCall: ns.MessagesPerCall(), Replica: rs,
	})
}
