// Package participant is the SDK for a service that takes part in dtx
// transactions. A service implements Resource (prepare, commit and abort
// on its own state); the package runs the twopc participant machine around
// it: strict two-phase locking, its own write-ahead log, duplicate, late
// and out-of-order message protection, and in-doubt recovery after a crash.
//
// A Service is supervised: when it crashes (a simulated crash, or a failed
// log write) it loses its memory, waits, and comes back from its log alone —
// a fresh Resource from NewResource, the log replayed into it, and every
// in-doubt branch asking the coordinator for its outcome.
package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Resource is the business side of a participant (see twopc.Resource).
type Resource = twopc.Resource

// Recoverer is a Resource that must act once the log has been replayed
// into it and before the service serves: a resource whose prepared state
// lives outside the process (a database's prepared transactions) resolves
// there what the log says about it. An error stops the service from
// opening.
type Recoverer interface {
	Recover() error
}

// Faults are the simulated failures of a service, as probabilities.
type Faults struct {
	// FailRate: a PREPARE fails its business check ("simulated failure").
	FailRate float64
	// SlowRate: a vote is held back for SlowDelay (to trip the prepare
	// timeout).
	SlowRate  float64
	SlowDelay time.Duration
	// CrashRate: per PREPARED or COMMITTED record, the service crashes
	// either just before writing it or just after it is durable and before
	// the vote or ACK leaves. Its memory and unsynced log tail are lost.
	CrashRate float64
	// Downtime is how long a crashed service stays down.
	Downtime time.Duration
	// Seed drives the rolls.
	Seed uint64
}

// Config configures a Service.
type Config struct {
	// ID is the service's node name (also its Machine.ID).
	ID string
	// Dir holds the service's log.
	Dir string
	// NewResource returns the service's state as it was before the log's
	// first record (the log is replayed into it).
	NewResource func() (Resource, error)
	Machine     twopc.ParticipantConfig
	Tick        time.Duration
	Network     transport.Network
	Log         wal.Config
	Faults      Faults
	// Hooks are extra crash points for tests (failpoints), checked before
	// the simulated faults.
	Hooks node.Hooks
	// Snapshot says when to snapshot the service's state (a Resource that
	// implements Snapshotter) and compact its log. Zero: never.
	Snapshot SnapshotConfig
	// SnapshotHook, if set, is called after each step of writing a
	// snapshot and may stop it there with an error (crash tests).
	SnapshotHook func(wal.SnapshotStep) error
	// CompactHook, if set, is called before a snapshot's compaction of
	// the log (crash tests).
	CompactHook func(upTo uint64)
	// TableHook, if set, is called before each append to a snapshot's
	// table file (node.Tables.Hook) and may stop it with an error.
	TableHook func(file string) error
	// Tracer, if set, sees the service's branches: messages taken,
	// business checks, records appended (package tracing makes spans of
	// them). Nil: no tracing, and nothing of it on the hot path.
	Tracer Tracer
	Logger *slog.Logger
}

// Tracer sees what a service does with its branches. Every method is
// called on the service's loop goroutine and must not block.
type Tracer interface {
	// Step: m, which carries a trace context, is about to be taken by the
	// machine.
	Step(m twopc.Message)
	// Send: msgs are about to go to the transport, every record before
	// them durable; it may set their Trace. (Not called with simulated
	// slow votes, Faults.SlowRate, which send from a timer.)
	Send(msgs []twopc.Message)
	// CheckStart and CheckEnd surround a branch's business check
	// (Resource.Prepare), which runs once the branch holds its locks.
	CheckStart(tx string, attempt uint32)
	CheckEnd(tx string, attempt uint32, err error)
	// Record: r was appended (and is durable if forced).
	Record(r *twopc.Record)
	// Reset: the service comes back from its log; whatever was open is
	// lost.
	Reset()
}

// Stats counts what happened to a service.
type Stats struct {
	Crashes  uint64
	Restarts uint64
}

// Service runs one participant, restarting it after crashes.
type Service struct {
	cfg   Config
	rng   *lockedRand
	inc   atomic.Pointer[incarnation]
	stats struct{ crashes, restarts atomic.Uint64 }
	stop  context.Context
	halt  context.CancelFunc
	mu    struct {
		sync.Mutex
		running, closed bool
	}
	done chan struct{}
	// snapMu serializes writing a snapshot (and compacting after it) with
	// loading one at a restart; it guards snapStats.
	snapMu    sync.Mutex
	snapStats SnapshotStats
	tables    *node.Tables // the snapshots' table files; under snapMu
}

// incarnation is one life of the service, from its log to its crash.
type incarnation struct {
	log  *wal.Log
	m    *twopc.Participant
	res  Resource
	node *node.Node
	done chan struct{}
}

// Open opens the service's log, replays it and readies the service to
// serve. Call Run.
func Open(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ID == "" || cfg.NewResource == nil || cfg.Network == nil {
		return nil, fmt.Errorf("participant: ID, NewResource and Network are required")
	}
	cfg.Machine.ID = cfg.ID
	s := &Service{cfg: cfg, rng: newLockedRand(cfg.Faults.Seed), done: make(chan struct{})}
	s.stop, s.halt = context.WithCancel(context.Background())
	inc, err := s.open()
	if err != nil {
		return nil, err
	}
	s.inc.Store(inc)
	return s, nil
}

func (s *Service) open() (*incarnation, error) {
	lc := s.cfg.Log
	lc.Dir = filepath.Clean(s.cfg.Dir)
	res, err := s.cfg.NewResource()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.ID, err)
	}
	raw := res
	var fault *faulty
	if f := s.cfg.Faults.FailRate; f > 0 {
		fault = &faulty{AttemptResource: twopc.AsAttemptResource(res), rate: f, rng: s.rng}
		res = fault
	}
	tr := s.cfg.Tracer
	if tr != nil {
		tr.Reset()
		res = tracedResource{twopc.AsAttemptResource(res), tr}
	}
	m, err := twopc.NewParticipant(s.cfg.Machine, res)
	if err != nil {
		return nil, err
	}
	hooks := s.hooks()
	s.snapMu.Lock()
	t0 := time.Now()
	after, err := s.loadSnapshot(s.fs(), lc.Dir, m, raw)
	t1 := time.Now()
	var log *wal.Log
	if err == nil {
		log, err = node.RecoverAfter(lc, m, hooks, after)
	}
	s.snapStats.LoadTook, s.snapStats.ReplayTook = t1.Sub(t0), time.Since(t1)
	s.snapStats.LoadedFinished, _ = m.FinishedStats()
	st := s.snapStats
	s.snapMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.ID, err)
	}
	s.cfg.Logger.Info("log recovered", "service", s.cfg.ID, "snapshot", st.Loaded, "snapshot_load", st.LoadTook,
		"replay_from", after+1, "replay", st.ReplayTook, "finished_retained", st.LoadedFinished)
	if rc, ok := raw.(Recoverer); ok {
		if err := rc.Recover(); err != nil {
			log.Close()
			return nil, fmt.Errorf("%s: recover: %w", s.cfg.ID, err)
		}
	}
	if fault != nil {
		fault.on = true // never during replay: a logged PREPARED re-applies
	}
	inc := &incarnation{log: log, m: m, res: raw, done: make(chan struct{})}
	nc := node.Config{
		ID:        s.cfg.ID,
		Log:       log,
		Transport: s.cfg.Network,
		Tick:      s.cfg.Tick,
		Hooks:     hooks,
		Logger:    s.cfg.Logger,
	}
	var machine node.Machine = m
	if tr != nil {
		nc.OnRecord = tr.Record
		machine = tracedMachine{m, tr}
		if hooks.Delay == nil { // a held message leaves from a timer, off the loop
			nc.Transport = tracedTransport{s.cfg.Network, tr}
		}
	}
	inc.node, err = node.New(nc, machine)
	if err != nil {
		log.Close()
		return nil, err
	}
	return inc, nil
}

func (s *Service) hooks() node.Hooks {
	var h node.Hooks
	f := s.cfg.Faults
	if f.CrashRate > 0 {
		roll := func(rd *twopc.Ready) bool {
			for i := range rd.Records {
				if t := rd.Records[i].Type; (t == twopc.RecPrepared || t == twopc.RecCommitted) && s.rng.Float64() < f.CrashRate/2 {
					return true
				}
			}
			return false
		}
		h.CrashBeforeLog = func(rd *twopc.Ready, _ bool) bool { return roll(rd) }
		h.CrashAfterLog = roll
	}
	if f.SlowRate > 0 && f.SlowDelay > 0 {
		h.Delay = func(m *twopc.Message) time.Duration {
			if m.Type == twopc.MsgVote && s.rng.Float64() < f.SlowRate {
				return f.SlowDelay
			}
			return 0
		}
	}
	return node.MergeHooks(s.cfg.Hooks, h)
}

// Run serves until ctx ends or Close is called. A crash is followed by a
// restart from the log after Faults.Downtime; a failed log (a real disk
// error) is returned.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.mu.running || s.mu.closed {
		s.mu.Unlock()
		return errors.New("participant: Run called twice or after Close")
	}
	s.mu.running = true
	s.mu.Unlock()
	defer close(s.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stop, cancel)()
	if s.cfg.Snapshot.on() {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); s.snapshotter(ctx) }()
		defer wg.Wait()
		defer cancel()
	}
	for {
		inc := s.inc.Load()
		inbox := inc.node.Inbox()
		s.cfg.Network.Register(s.cfg.ID, inbox)
		err := inc.node.Run(ctx)
		s.cfg.Network.Unregister(s.cfg.ID, inbox)
		close(inc.done)
		if err == nil {
			return nil // stopped; Close closes the log
		}
		if !errors.Is(err, node.ErrCrashed) {
			return err
		}
		s.stats.crashes.Add(1)
		s.cfg.Logger.Info("service crashed", "service", s.cfg.ID)
		if cerr := inc.log.Crash(); cerr != nil {
			return fmt.Errorf("%s: crash: %w", s.cfg.ID, cerr)
		}
		s.closeLedger(inc)
		select {
		case <-time.After(s.cfg.Faults.Downtime):
		case <-ctx.Done():
			// Come back before stopping, so Close finds a whole service.
		}
		next, err := s.open()
		if err != nil {
			return err
		}
		s.stats.restarts.Add(1)
		s.inc.Store(next)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Inspect runs f on the service's loop goroutine with the machine and the
// resource to itself. It fails if the service is down (crashed) or stopped.
func (s *Service) Inspect(ctx context.Context, f func(m *twopc.Participant, r Resource)) error {
	inc := s.inc.Load()
	return inc.node.Do(ctx, inc.done, func() { f(inc.m, inc.res) })
}

// InspectStopped runs f on a service that is not running (before Run or
// after Close).
func (s *Service) InspectStopped(f func(m *twopc.Participant, r Resource)) {
	inc := s.inc.Load()
	f(inc.m, inc.res)
}

// LogStats returns the current incarnation's log counters (they restart
// from zero after a crash).
func (s *Service) LogStats() wal.Stats { return s.inc.Load().log.Stats() }

// Stats returns crash and restart counts.
func (s *Service) Stats() Stats {
	return Stats{Crashes: s.stats.crashes.Load(), Restarts: s.stats.restarts.Load()}
}

// Close stops the service and closes its log.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	running := s.mu.running
	s.mu.Unlock()
	s.halt()
	if running {
		<-s.done
	}
	inc := s.inc.Load()
	s.closeLedger(inc)
	s.snapMu.Lock() // a snapshot still writing
	if s.tables != nil {
		s.tables.Close()
	}
	s.snapMu.Unlock()
	return inc.log.Close()
}

// closeLedger closes the ledger file of an incarnation's Resource, if it
// has one, once no snapshot of it is being written (snapMu).
func (s *Service) closeLedger(inc *incarnation) {
	l, ok := inc.res.(interface{ CloseLedger() error })
	if !ok {
		return
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if err := l.CloseLedger(); err != nil {
		s.cfg.Logger.Warn("ledger close failed", "service", s.cfg.ID, "err", err)
	}
}

// tracedResource shows a Tracer each business check.
type tracedResource struct {
	twopc.AttemptResource
	t Tracer
}

func (r tracedResource) PrepareAttempt(tx string, attempt uint32, op []byte) error {
	r.t.CheckStart(tx, attempt)
	err := r.AttemptResource.PrepareAttempt(tx, attempt, op)
	r.t.CheckEnd(tx, attempt, err)
	return err
}

func (r tracedResource) ReplayPrepare(tx string, attempt uint32, op []byte) error {
	return twopc.ReplayPrepare(r.AttemptResource, tx, attempt, op)
}

// tracedMachine shows a Tracer the messages the machine takes.
type tracedMachine struct {
	*twopc.Participant
	t Tracer
}

func (tm tracedMachine) Step(m twopc.Message) {
	if len(m.Trace) > 0 {
		tm.t.Step(m)
	}
	tm.Participant.Step(m)
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

// faulty makes a Resource fail some prepares on purpose.
type faulty struct {
	twopc.AttemptResource
	on   bool
	rate float64
	rng  *lockedRand
}

func (f *faulty) Prepare(tx string, op []byte) error {
	if f.on && f.rng.Float64() < f.rate {
		return errors.New("simulated failure")
	}
	return f.AttemptResource.Prepare(tx, op)
}

func (f *faulty) PrepareAttempt(tx string, attempt uint32, op []byte) error {
	if f.on && f.rng.Float64() < f.rate {
		return errors.New("simulated failure")
	}
	return f.AttemptResource.PrepareAttempt(tx, attempt, op)
}

// ReplayPrepare never fails on purpose: the faults start after replay.
func (f *faulty) ReplayPrepare(tx string, attempt uint32, op []byte) error {
	return twopc.ReplayPrepare(f.AttemptResource, tx, attempt, op)
}

type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(seed uint64) *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed^0x2545f4914f6cdd1d))}
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}
