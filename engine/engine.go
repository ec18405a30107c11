// Package engine is the embedded deployment: the coordinator and the
// built-in services (package services) in one process, assembled on one
// data directory by package deploy, with the calls `dtx run`, `dtx
// recover` and `dtx state` make on it: submit a purchase, read and check
// the state of every service, wait until nothing is unfinished.
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
)

// Config configures an Engine: the deployment's data directory, protocol
// settings and simulated faults.
type Config = deploy.Config

// DefaultConfig returns the defaults of `dtx run` with no faults.
func DefaultConfig(dir string) Config { return deploy.DefaultConfig(dir) }

// Services are the participants of every purchase, in PREPARE order: the
// built-in services.
var Services = services.IDs()

// Engine is a running deployment.
type Engine struct {
	d      *deploy.Deployment
	report RecoveryReport

	mu        sync.Mutex
	recovered []twopc.Outcome
}

// RecoveryReport says what the data directory held when it was opened.
type RecoveryReport struct {
	Fresh         bool                // the directory was new
	CoordEpoch    uint64              // the coordinator's epoch after recovery
	InDoubt       map[string][]string // service -> branches prepared without a decision
	Unfinished    int                 // transactions the coordinator had not finished
	PresumedAbort []twopc.Outcome     // undecided transactions aborted by recovery
	// Opened is how long each component (a service, or
	// twopc.CoordinatorID) took to load its snapshot and replay its log;
	// they open at the same time.
	Opened map[string]time.Duration
	// CoordSnapshot describes the coordinator's snapshot
	// loaded (Loaded 0: none, the whole log was replayed).
	CoordSnapshot coordinator.SnapshotStats
}

// Open opens or creates the data directory, recovers every component from
// its log, and starts them all.
func Open(cfg Config) (*Engine, error) {
	e := &Engine{}
	d, err := deploy.Open(cfg, func(o twopc.Outcome) {
		e.mu.Lock()
		e.recovered = append(e.recovered, o)
		e.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	e.d = d
	e.report = RecoveryReport{Fresh: d.Fresh, CoordEpoch: d.Epoch, Unfinished: d.Inflight, InDoubt: d.InDoubt, Opened: d.Opened,
		CoordSnapshot: d.Coord.SnapshotStats()}
	return e, nil
}

// Err returns a fatal error of a component (a failed log), if any. Such a
// component has stopped; the process should exit and recover.
func (e *Engine) Err() error { return e.d.Err() }

// World returns the initial state.
func (e *Engine) World() purchase.World { return e.d.World }

// Report returns what recovery found when the engine opened, with the
// outcomes it decided so far.
func (e *Engine) Report() RecoveryReport {
	r := e.report
	e.mu.Lock()
	r.PresumedAbort = slices.Clone(e.recovered)
	e.mu.Unlock()
	return r
}

// Submit runs one purchase across the three services.
func (e *Engine) Submit(ctx context.Context, req *purchase.Request) (twopc.Outcome, error) {
	return e.SubmitTo(ctx, req, Services)
}

// SubmitTo runs one purchase across the named services only (a subset of
// Services: benchmarks with fewer participants per transaction).
func (e *Engine) SubmitTo(ctx context.Context, req *purchase.Request, services []string) (twopc.Outcome, error) {
	op, err := req.MarshalBinary()
	if err != nil {
		return twopc.Outcome{}, err
	}
	return e.d.Coord.Submit(ctx, req.TxID, Branches(op, services))
}

// Branches returns one branch per service, each with op: a purchase's
// transaction.
func Branches(op []byte, services []string) []twopc.Branch {
	branches := make([]twopc.Branch, len(services))
	for i, id := range services {
		branches[i] = twopc.Branch{Node: id, Op: op}
	}
	return branches
}

// Quiet reports whether nothing is unfinished: the coordinator has no
// transaction in flight and no service holds an in-doubt branch.
func (e *Engine) Quiet(ctx context.Context) (bool, error) {
	st, err := e.d.Coord.Status(ctx)
	if err != nil {
		return false, err
	}
	if st.Inflight > 0 {
		return false, nil
	}
	for _, id := range Services {
		var n int
		err := e.d.Services[id].Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { n = m.InDoubt() })
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return false, err
			}
			return false, nil // down (crashed and restarting): not quiet yet
		}
		if n > 0 {
			return false, nil
		}
	}
	return true, nil
}

// WaitQuiet waits until Quiet, polling, or until ctx ends.
func (e *Engine) WaitQuiet(ctx context.Context) error {
	for {
		ok, err := e.Quiet(ctx)
		if err == nil && ok {
			return nil
		}
		if err := e.Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("engine: still unfinished: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// State is the state of every component, as `dtx state` prints it.
type State = services.State

// CoordStatus is the coordinator's part of State.
type CoordStatus = services.CoordStatus

// State reads the state of every component (their in-memory state, which
// is their log replayed plus what is in flight; with a store, the services'
// committed rows in its database).
func (e *Engine) State(ctx context.Context) (State, error) {
	st := State{InDoubt: []string{}}
	cs, err := e.d.Coord.Status(ctx)
	if err != nil {
		return st, err
	}
	st.Coordinator = CoordStatus{Epoch: cs.Epoch, Inflight: cs.Inflight}
	for _, id := range Services {
		var serr error
		err := e.d.Services[id].Inspect(ctx, func(m *twopc.Participant, r participant.Resource) {
			for _, tx := range m.InDoubtTxs() {
				st.InDoubt = append(st.InDoubt, id+"/"+tx)
			}
			if e.d.PG == nil {
				serr = st.Set(id, r)
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return st, fmt.Errorf("engine: %s: %w", id, err)
		}
	}
	if e.d.PG != nil {
		return st, e.storeState(ctx, &st)
	}
	return st, nil
}

// storeState fills the services' part of st from the store's rows.
func (e *Engine) storeState(ctx context.Context, st *State) error {
	ps, err := e.d.PG.State(ctx)
	if err != nil {
		return err
	}
	st.Inventory, st.Payment, st.Order = ps.Inventory, ps.Payment, ps.Order
	return nil
}

// Check verifies the invariants of every service's state (stock and money
// add up, nothing negative; each service's own Check) and atomicity across
// them: every committed order has exactly one reservation and one charge,
// and nothing else does. With a store, the services' own checks are the
// store's (its tables' constraints and sums).
func (e *Engine) Check(ctx context.Context) error {
	var errs []error
	for _, svc := range services.Builtin() {
		err := e.d.Services[svc.ID].Inspect(ctx, func(_ *twopc.Participant, r participant.Resource) {
			if e.d.PG != nil {
				return
			}
			if err := svc.Check(r); err != nil {
				errs = append(errs, err)
			}
		})
		if err != nil {
			return err
		}
	}
	if e.d.PG != nil {
		errs = append(errs, e.d.PG.Check(ctx))
	}
	st, err := e.State(ctx)
	if err != nil {
		return err
	}
	errs = append(errs, CheckAtomic(&st)...)
	return errors.Join(errs...)
}

// CheckAtomic returns one error per transaction that is committed at some
// services and not at others, or whose records disagree.
func CheckAtomic(st *State) []error { return services.CheckAtomic(st) }

// DrainTimeout bounds how long Close waits for unfinished transactions.
const DrainTimeout = 3 * time.Second

// Close lets unfinished transactions finish (at most DrainTimeout: decisions
// reach every service, so a clean stop leaves nothing in doubt), then stops
// every component and closes every log (syncing them). Whatever is still
// unfinished is finished by the next Open.
func (e *Engine) Close() error {
	if e.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
		e.WaitQuiet(ctx)
		cancel()
	}
	return e.d.Close()
}

// DeadlockStats returns the coordinator's deadlock counters.
func (e *Engine) DeadlockStats(ctx context.Context) (twopc.DeadlockStats, error) {
	return e.d.Coord.DeadlockStats(ctx)
}

// Syncs returns the number of fdatasync calls made by every log so far
// (a crashed service's count restarts from zero).
func (e *Engine) Syncs() uint64 {
	n := e.d.Coord.Log().Stats().Syncs
	for _, s := range e.d.Services {
		n += s.LogStats().Syncs
	}
	return n
}

// NetStats returns the in-process network's counters.
func (e *Engine) NetStats() transport.NetStats { return e.d.Net.Stats() }

// Crashes returns how many simulated service crashes happened.
func (e *Engine) Crashes() uint64 {
	var n uint64
	for _, s := range e.d.Services {
		n += s.Stats().Crashes
	}
	return n
}
