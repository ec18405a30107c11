// Package coordinator is the driver of the twopc coordinator machine: it
// recovers the machine from its log, runs it on a node loop, and offers
// clients Submit, which returns only once the outcome is durable.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Config configures a Coordinator.
type Config struct {
	// Dir holds the coordinator's log.
	Dir string
	// Machine is the protocol configuration (timeouts in ticks).
	Machine twopc.CoordinatorConfig
	// Tick is the wall-clock length of one tick.
	Tick time.Duration
	// Network connects the coordinator to the participants.
	Network transport.Network
	// Log configures the write-ahead log (Dir is set from Dir above).
	Log wal.Config
	// OnRecovered receives outcomes decided during recovery (no client
	// waits for them). Optional; called on the loop goroutine.
	OnRecovered func(twopc.Outcome)
	// OnRecord, if set, sees every record after it was appended (metrics).
	// Called on the loop goroutine; it must not block.
	OnRecord func(*twopc.Record)
	// Hooks are crash points for tests (failpoints).
	Hooks node.Hooks
	// Snapshot says when the coordinator snapshots its machine and
	// compacts its log (snapshot.go; zero: the defaults). Only for Open's
	// coordinator.
	Snapshot SnapshotConfig
	// SnapshotHooks cut the writing of snapshots (failpoints).
	SnapshotHooks node.SnapshotHooks
	// Tracer, if set, sees each transaction's life (package tracing makes
	// spans of it). Nil: no tracing, and nothing of it on the hot path.
	Tracer Tracer
	Logger *slog.Logger
}

// Tracer sees what the coordinator does with each transaction. Every
// method is called on the loop goroutine and must not block.
type Tracer interface {
	// Begin: tx was proposed (new, not a duplicate) by a caller whose
	// context is ctx (its span, if any, is the transaction's parent).
	Begin(ctx context.Context, tx string, branches []twopc.Branch)
	// Send: msgs are about to go to the transport, every record before
	// them durable; it may set their Trace.
	Send(msgs []twopc.Message)
	// Step: m, which carries a trace context (the participants set it on
	// the VOTEs and ACKs of traced branches), is about to be taken by the
	// machine.
	Step(m twopc.Message)
	// Record: r was appended (and is durable if forced).
	Record(r *twopc.Record)
	// Outcome: o is about to be reported to its caller.
	Outcome(o *twopc.Outcome)
}

// Coordinator runs the coordinator machine.
type Coordinator struct {
	cfg  Config
	log  *wal.Log // Open's own log, closed by Close; nil after New
	m    *twopc.Coordinator
	node *node.Node

	done     chan struct{}                   // closed when Run returns
	loopDone chan struct{}                   // closed when the node loop returns, before the snapshotter is waited for
	waiters  map[string][]waiter             // loop goroutine only
	lookups  map[string][]chan twopc.Outcome // loop goroutine only; see Lookup

	stop context.Context // cancelled by Close
	halt context.CancelFunc

	// Snapshots (Open's coordinator only; snapshot.go): snapRun is held
	// by the snapshot being taken, snapMu guards snapStats.
	snapRun   sync.Mutex
	snapMu    sync.Mutex
	snapStats SnapshotStats
	tables    *node.Tables // the snapshots' table files; under snapRun

	mu struct {
		sync.Mutex
		running, closed bool
	}
}

// Open opens (or creates) the coordinator's log, replays it into a fresh
// machine and starts it: the new epoch is logged and unfinished work is
// queued (presumed abort of undecided transactions, COMMIT resends). Call
// Run to serve.
func Open(cfg Config) (*Coordinator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lc := cfg.Log
	lc.Dir = filepath.Clean(cfg.Dir)
	m, err := twopc.NewCoordinator(cfg.Machine)
	if err != nil {
		return nil, err
	}
	log, rec, err := Recover(lc, m, cfg.Hooks)
	for _, e := range rec.Skipped {
		cfg.Logger.Warn("snapshot skipped", "err", e)
	}
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	c, err := newCoordinator(cfg, m, log, nil, true)
	if err != nil {
		log.Close()
		return nil, err
	}
	c.log = log
	c.snapStats.Loaded = rec.Snapshot
	c.snapStats.LoadTook, c.snapStats.LoadedOutcomes, c.snapStats.LoadedExpired = rec.LoadTook, rec.Outcomes, rec.Expired
	c.snapStats.ReplayTook = rec.ReplayTook
	cfg.Logger.Info("log recovered", "snapshot", rec.Snapshot, "snapshot_load", rec.LoadTook, "replay_from", rec.Snapshot+1,
		"replay", rec.ReplayTook, "outcomes_retained", rec.Outcomes, "expired_ids", rec.Expired)
	for _, e := range rec.Skipped {
		c.snapStats.Skipped = append(c.snapStats.Skipped, e.Error())
	}
	return c, nil
}

// New runs m, a machine already restored and started by its caller, on
// log: a replicated coordinator (package replica) restores the machine
// from the group's committed records and gives it a log whose sync waits
// for the group to commit. ckpts are the seqs of the checkpoints found in
// the restored records (node.Carrier.Checkpoints). Close does not close
// log. cfg.Dir and cfg.Log are not used.
func New(cfg Config, m *twopc.Coordinator, log node.Log, ckpts []uint64) (*Coordinator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return newCoordinator(cfg, m, log, ckpts, false)
}

// newCoordinator builds the driver; ownLog says the log is a wal of its
// own (Open), compacted after its snapshots only, never by the carrier at
// checkpoints (a replicated coordinator's group log is).
func newCoordinator(cfg Config, m *twopc.Coordinator, log node.Log, ckpts []uint64, ownLog bool) (*Coordinator, error) {
	c := &Coordinator{
		cfg:      cfg,
		m:        m,
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
		waiters:  make(map[string][]waiter),
		lookups:  make(map[string][]chan twopc.Outcome),
	}
	c.stop, c.halt = context.WithCancel(context.Background())
	var err error
	nc := node.Config{
		ID:          cfg.Machine.ID,
		Log:         log,
		Transport:   cfg.Network,
		Tick:        cfg.Tick,
		OnOutcomes:  c.deliver,
		OnRecord:    cfg.OnRecord,
		Hooks:       cfg.Hooks,
		Logger:      cfg.Logger,
		Checkpoints: ckpts,
	}
	nc.NoCheckpointCompaction = ownLog
	var machine node.Machine = m
	if t := cfg.Tracer; t != nil {
		if cfg.Hooks.Delay != nil {
			return nil, errors.New("coordinator: a Tracer with Hooks.Delay: held messages would reach the tracer off the loop goroutine")
		}
		nc.Transport = tracedTransport{cfg.Network, t}
		nc.OnRecord = func(r *twopc.Record) {
			if cfg.OnRecord != nil {
				cfg.OnRecord(r)
			}
			t.Record(r)
		}
		machine = tracedMachine{m, t}
	}
	c.node, err = node.New(nc, machine)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Run serves until ctx ends or the log fails. It registers the coordinator
// on the network for as long as it runs.
func (c *Coordinator) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.mu.running || c.mu.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.mu.running = true
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stop, cancel)()
	// The snapshotter stops before done is closed: Close closes the log
	// it writes to.
	var writer sync.WaitGroup
	wctx, stopWriter := context.WithCancel(ctx)
	if c.log != nil && !c.cfg.Snapshot.Off {
		writer.Go(func() { c.snapshotter(wctx) })
	}
	inbox := c.node.Inbox()
	c.cfg.Network.Register(c.cfg.Machine.ID, inbox)
	err := c.node.Run(ctx)
	close(c.loopDone) // a SnapshotNow waiting for the loop gives up, so the snapshotter can end
	c.cfg.Network.Unregister(c.cfg.Machine.ID, inbox)
	stopWriter()
	writer.Wait()
	// The loop is over: asynchronous waiters learn that no outcome will
	// come from it (synchronous ones see done).
	for tx, ws := range c.waiters {
		for _, w := range ws {
			if w.fn != nil {
				w.fn(twopc.Outcome{}, ErrClosed)
			}
		}
		delete(c.waiters, tx)
	}
	close(c.done)
	if err != nil {
		c.cfg.Logger.Error("coordinator stopped", "err", err)
	}
	return err
}

// deliver hands each outcome to the oldest waiter for its transaction.
func (c *Coordinator) deliver(outs []twopc.Outcome) {
	for _, o := range outs {
		if c.cfg.Tracer != nil {
			c.cfg.Tracer.Outcome(&o)
		}
		c.answerLookups(o)
		ws := c.waiters[o.Tx]
		if len(ws) == 0 {
			if o.Recovered && c.cfg.OnRecovered != nil {
				c.cfg.OnRecovered(o)
			}
			continue
		}
		if ws[0].fn != nil {
			ws[0].fn(o, nil)
		} else {
			ws[0].ch <- result{o: o}
		}
		if len(ws) == 1 {
			delete(c.waiters, o.Tx)
		} else {
			c.waiters[o.Tx] = ws[1:]
		}
	}
}

// ErrClosed is returned by Submit when the coordinator is not running.
var ErrClosed = errors.New("coordinator: closed")

// Submit runs a transaction and returns its outcome once it is durable.
// A transaction id submitted before gets the first outcome, as Duplicate.
// If ctx ends first, the caller has learned nothing: the transaction may
// still commit; ask again with the same id.
func (c *Coordinator) Submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	// Post, not Do: the proposal's error comes back on ch like the
	// outcome, so the caller waits on one channel, not two.
	ch := make(chan result, 1)
	err := c.node.Post(ctx, c.done, func() {
		if err := c.proposeLocked(ctx, tx, branches, waiter{ch: ch}); err != nil {
			ch <- result{err: err}
		}
	})
	if err == node.ErrStopped {
		err = ErrClosed
	}
	if err != nil {
		return twopc.Outcome{}, err
	}
	select {
	case r := <-ch:
		return r.o, r.err
	case <-ctx.Done():
		return twopc.Outcome{}, ctx.Err()
	case <-c.done:
		return twopc.Outcome{}, ErrClosed
	}
}

// waiter is a Submit waiting for an outcome: a channel (Submit) or a
// function called on the loop goroutine (SubmitAsync).
type waiter struct {
	ch chan result
	fn func(twopc.Outcome, error)
}

// result is what a Submit waits for.
type result struct {
	o   twopc.Outcome
	err error
}

// proposeLocked proposes tx and registers w for its outcome (loop
// goroutine only).
func (c *Coordinator) proposeLocked(ctx context.Context, tx string, branches []twopc.Branch, w waiter) error {
	c.waiters[tx] = append(c.waiters[tx], w)
	if c.cfg.Tracer != nil {
		return c.proposeTraced(ctx, tx, branches)
	}
	err := c.m.Propose(tx, branches)
	if err != nil {
		ws := c.waiters[tx]
		if len(ws) == 1 {
			delete(c.waiters, tx)
		} else {
			c.waiters[tx] = ws[:len(ws)-1]
		}
	}
	return err
}

// proposeTraced is proposeLocked's proposal with a Tracer: a new
// transaction (not a duplicate) begins its trace.
func (c *Coordinator) proposeTraced(ctx context.Context, tx string, branches []twopc.Branch) error {
	_, known := c.m.State(tx)
	err := c.m.Propose(tx, branches)
	if err != nil {
		c.dropWaiter(tx)
	} else if !known {
		if ctx == nil {
			ctx = context.Background()
		}
		c.cfg.Tracer.Begin(ctx, tx, branches)
	}
	return err
}

// dropWaiter removes the waiter proposeLocked added last for tx.
func (c *Coordinator) dropWaiter(tx string) {
	ws := c.waiters[tx]
	if len(ws) == 1 {
		delete(c.waiters, tx)
	} else {
		c.waiters[tx] = ws[:len(ws)-1]
	}
}

// tracedTransport shows a Tracer the messages before they leave.
type tracedTransport struct {
	transport.Transport
	t Tracer
}

func (tt tracedTransport) Send(msgs []twopc.Message) {
	tt.t.Send(msgs)
	tt.Transport.Send(msgs)
}

// tracedMachine shows a Tracer the messages the machine takes.
type tracedMachine struct {
	*twopc.Coordinator
	t Tracer
}

func (tm tracedMachine) Step(m twopc.Message) {
	if len(m.Trace) > 0 {
		tm.t.Step(m)
	}
	tm.Coordinator.Step(m)
}

// Proposal is one transaction of SubmitAsync.
type Proposal struct {
	Tx       string
	Branches []twopc.Branch
	// Ctx, if set, is the caller's context for tracing: its span is the
	// transaction's parent (see Config.Tracer). Nil: none.
	Ctx context.Context
}

// SubmitAsync proposes every transaction of ps in one turn of the loop
// (one hop into it for all of them, no goroutine each) and returns. done
// is called exactly once for each, with its index: with its outcome once
// it is durable (Submit's rules), or with the error that refused it
// (ErrClosed if the coordinator stops first and the outcome is not
// known). done runs on the coordinator's loop goroutine (or, once the
// loop has stopped, another one) and must not block.
func (c *Coordinator) SubmitAsync(ps []Proposal, done func(i int, o twopc.Outcome, err error)) {
	answered := make([]atomic.Bool, len(ps))
	answer := func(i int, o twopc.Outcome, err error) {
		if answered[i].CompareAndSwap(false, true) {
			done(i, o, err)
		}
	}
	err := c.node.Do(context.Background(), c.done, func() {
		for i := range ps {
			w := waiter{fn: func(o twopc.Outcome, err error) { answer(i, o, err) }}
			if err := c.proposeLocked(ps[i].Ctx, ps[i].Tx, ps[i].Branches, w); err != nil {
				answer(i, twopc.Outcome{}, err)
			}
		}
	})
	if err != nil {
		// The loop stopped: whatever has no answer yet gets none from it.
		for i := range ps {
			answer(i, twopc.Outcome{}, ErrClosed)
		}
	}
}

// Done is closed when the coordinator's loop has stopped.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// Status is a snapshot of the coordinator.
type Status struct {
	Epoch    uint64
	Inflight int
	// Shed counts messages about unknown transactions dropped past a
	// participant's presumed-abort budget.
	Shed uint64
}

// Status returns the epoch and the number of unfinished transactions.
func (c *Coordinator) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.node.Do(ctx, c.done, func() {
		s = Status{Epoch: c.m.Epoch(), Inflight: c.m.Inflight(), Shed: c.m.Shed()}
	})
	return s, err
}

// DeadlockStats returns the machine's deadlock counters.
func (c *Coordinator) DeadlockStats(ctx context.Context) (twopc.DeadlockStats, error) {
	var s twopc.DeadlockStats
	err := c.node.Do(ctx, c.done, func() { s = c.m.DeadlockStats() })
	return s, err
}

// Close stops the loop (if running) and closes the log, syncing it.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	running := c.mu.running
	c.mu.Unlock()
	c.halt()
	if running {
		<-c.done
	}
	if c.log == nil {
		return nil
	}
	c.snapRun.Lock() // a SnapshotNow of another caller still writing
	defer c.snapRun.Unlock()
	if c.tables != nil {
		c.tables.Close()
	}
	return c.log.Close()
}

// Log returns the coordinator's write-ahead log (for stats); nil for a
// replicated coordinator (New).
func (c *Coordinator) Log() *wal.Log { return c.log }
