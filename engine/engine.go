// Package engine runs a whole dtx deployment in one process: the
// coordinator and the three example services (inventory, payment, order)
// on an in-process network, each with its own log under one data
// directory. It is what `dtx run`, `dtx recover` and `dtx state` open.
//
// Data directory layout:
//
//	DIR/LOCK           held (flock) by the one process using DIR
//	DIR/world.json     the initial state, written once when DIR is created
//	DIR/coordinator/   the coordinator's log
//	DIR/inventory/     each service's log
//	DIR/payment/
//	DIR/order/
//
// Every service's state is its initial state (world.json) plus its log.
package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/failpoint"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
	"github.com/dtx-dev/dtx/services/pgstore"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Config configures an Engine.
type Config struct {
	// DataDir holds every log. Created if missing.
	DataDir string
	// World is the initial state for a new DataDir. For an existing one it
	// must be nil or equal to the stored world.
	World *purchase.World
	// Tick is the protocol's unit of time.
	Tick time.Duration
	// PrepareTimeout: a transaction whose votes are not all in by then
	// rolls back.
	PrepareTimeout time.Duration
	// CommitRetry is the first delay between COMMIT resends (it doubles up
	// to 20x, with jitter). Decisions are retried until acknowledged.
	CommitRetry time.Duration
	// LockTimeout bounds a lock wait at a service (a NO vote after it).
	LockTimeout time.Duration
	// Deadlock is the deadlock policy (default detect).
	Deadlock twopc.DeadlockPolicy
	// DetectEvery is how often services check their lock waits for
	// deadlocks (and report them to the coordinator under detect).
	DetectEvery time.Duration
	// MaxAttempts bounds how often a deadlock victim (wounded, or the
	// victim of a cycle) runs: it is restarted with the same id and
	// timestamp instead of being rolled back, up to this many attempts in
	// all. 0 means twopc.DefaultMaxAttempts (8); 1 means no restarts.
	MaxAttempts int
	// Faults are the simulated failures of each service.
	Faults participant.Faults
	// NetFaults are the simulated failures of the in-process network.
	NetFaults transport.Faults
	// Failpoints kill the process at named crash points (tests).
	Failpoints failpoint.Set
	// Today is the date cards are checked against (zero: now).
	Today time.Time
	// MaxInflight bounds unfinished transactions at the coordinator.
	MaxInflight int
	// SegmentSize of every log (0: the wal default).
	SegmentSize int64
	// WALPrealloc is the zero-fill chunk of every log (wal.Config
	// PreallocSize): 0 means the wal default (wal.DefaultPreallocSize), a
	// negative value turns preallocation off.
	WALPrealloc int64
	// Store, if set (postgres://…), keeps the services' state in that
	// PostgreSQL database instead of in their logs (package pgstore).
	Store  string
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of `dtx run` with no faults.
func DefaultConfig(dir string) Config {
	return Config{
		DataDir:        dir,
		Tick:           time.Millisecond,
		PrepareTimeout: time.Second,
		CommitRetry:    50 * time.Millisecond,
		LockTimeout:    500 * time.Millisecond,
		Deadlock:       twopc.DeadlockDetect,
		DetectEvery:    5 * time.Millisecond,
		MaxInflight:    1 << 16,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("engine: data directory is empty")
	case c.Tick <= 0:
		return errors.New("engine: tick must be > 0")
	case c.PrepareTimeout < c.Tick:
		return fmt.Errorf("engine: prepare timeout %v is shorter than a tick (%v)", c.PrepareTimeout, c.Tick)
	case c.CommitRetry < c.Tick:
		return fmt.Errorf("engine: commit retry %v is shorter than a tick (%v)", c.CommitRetry, c.Tick)
	case c.LockTimeout < c.Tick:
		return fmt.Errorf("engine: lock timeout %v is shorter than a tick (%v)", c.LockTimeout, c.Tick)
	case c.MaxAttempts < 0:
		return fmt.Errorf("engine: max attempts %d is negative (0: default %d, 1: no restarts)", c.MaxAttempts, twopc.DefaultMaxAttempts)
	}
	for name, p := range map[string]float64{"fail rate": c.Faults.FailRate, "slow rate": c.Faults.SlowRate, "crash rate": c.Faults.CrashRate} {
		if p < 0 || p > 1 {
			return fmt.Errorf("engine: %s %v is not a probability in [0, 1]", name, p)
		}
	}
	return nil
}

// Services are the participants of every purchase, in PREPARE order.
var Services = []string{inventory.ID, payment.ID, order.ID}

// Engine is a running deployment.
type Engine struct {
	cfg      Config
	lock     *os.File
	world    purchase.World
	net      *transport.MemNetwork
	coord    *coordinator.Coordinator
	services map[string]*participant.Service
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	errs     chan error
	report   RecoveryReport
	pg       *pgstore.Store // Config.Store's database, or nil

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
}

// Open opens or creates the data directory, recovers every component from
// its log, and starts them all.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Today.IsZero() {
		cfg.Today = time.Now()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: data directory: %w", err)
	}
	lock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, lock: lock, services: map[string]*participant.Service{}, errs: make(chan error, 8)}
	if err := e.open(); err != nil {
		e.closeAll()
		lock.Close()
		return nil, err
	}
	return e, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("engine: lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("engine: data directory %s is in use by another dtx process", dir)
	}
	return f, nil
}

func ticks(d, tick time.Duration) uint64 {
	n := uint64((d + tick - 1) / tick)
	return max(n, 1)
}

func (e *Engine) open() error {
	cfg := e.cfg
	w, fresh, err := loadWorld(cfg.DataDir, cfg.World)
	if err != nil {
		return err
	}
	e.world = w
	e.report.Fresh = fresh
	e.report.InDoubt = map[string][]string{}
	e.net = transport.NewMemNetwork(cfg.NetFaults, cfg.Faults.Seed^0xabcdef)
	logCfg := wal.DefaultConfig("")
	if cfg.SegmentSize > 0 {
		logCfg.SegmentSize = cfg.SegmentSize
	}
	switch {
	case cfg.WALPrealloc > 0:
		logCfg.PreallocSize = cfg.WALPrealloc
	case cfg.WALPrealloc < 0:
		logCfg.PreallocSize = 0
	}
	if err := e.openStore(w, fresh); err != nil {
		return err
	}
	for i, id := range Services {
		mc := cfg.ParticipantMachine(id)
		faults := cfg.Faults
		faults.Seed = cfg.Faults.Seed*31 + uint64(i) + 1
		if faults.SlowDelay == 0 {
			faults.SlowDelay = cfg.PrepareTimeout * 3 / 2
		}
		if faults.Downtime == 0 {
			faults.Downtime = 20 * time.Millisecond
		}
		newRes := func() (participant.Resource, error) {
			if e.pg != nil {
				return e.pg.NewResource(id)()
			}
			switch id {
			case inventory.ID:
				return inventory.New(w), nil
			case payment.ID:
				return payment.New(w, cfg.Today), nil
			default:
				return order.New(), nil
			}
		}
		s, err := participant.Open(participant.Config{
			ID:          id,
			Dir:         filepath.Join(cfg.DataDir, id),
			NewResource: newRes,
			Machine:     mc,
			Tick:        cfg.Tick,
			Network:     e.net,
			Log:         logCfg,
			Faults:      faults,
			Hooks:       cfg.Failpoints.Hooks(id),
			Logger:      cfg.Logger,
		})
		if err != nil {
			return err
		}
		e.services[id] = s
		s.InspectStopped(func(m *twopc.Participant, _ participant.Resource) {
			if txs := m.InDoubtTxs(); len(txs) > 0 {
				e.report.InDoubt[id] = txs
			}
		})
	}
	mc := cfg.CoordinatorMachine()
	rng := newRand(cfg.Faults.Seed)
	mc.Rand = rng.Uint64
	e.coord, err = coordinator.Open(coordinator.Config{
		Dir:     filepath.Join(cfg.DataDir, twopc.CoordinatorID),
		Machine: mc,
		Tick:    cfg.Tick,
		Network: e.net,
		Log:     logCfg,
		Hooks:   cfg.Failpoints.Hooks(twopc.CoordinatorID),
		OnRecovered: func(o twopc.Outcome) {
			e.mu.Lock()
			e.recovered = append(e.recovered, o)
			e.mu.Unlock()
		},
		Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.start(ctx, func(ctx context.Context) error { return e.coord.Run(ctx) })
	// The coordinator answers only once its loop runs (and its inbox is on
	// the network): wait for that before the services send their first
	// in-doubt inquiries, so that none is lost.
	st, err := e.coord.Status(context.Background())
	if err != nil {
		return err
	}
	for _, id := range Services {
		s := e.services[id]
		e.start(ctx, func(ctx context.Context) error { return s.Run(ctx) })
	}
	// Likewise, a service's inbox is on the network once its loop runs:
	// wait for every one, so that no PREPARE of the first transactions is
	// lost.
	for _, id := range Services {
		if err := e.services[id].Inspect(context.Background(), func(*twopc.Participant, participant.Resource) {}); err != nil {
			return fmt.Errorf("engine: %s did not start: %w", id, err)
		}
	}
	e.report.CoordEpoch = st.Epoch
	e.report.Unfinished = st.Inflight
	return nil
}

func (e *Engine) start(ctx context.Context, run func(context.Context) error) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := run(ctx); err != nil {
			select {
			case e.errs <- err:
			default:
			}
		}
	}()
}

// Err returns a fatal error of a component (a failed log), if any. Such a
// component has stopped; the process should exit and recover.
func (e *Engine) Err() error {
	select {
	case err := <-e.errs:
		e.errs <- err
		return err
	default:
		return nil
	}
}

// World returns the initial state.
func (e *Engine) World() purchase.World { return e.world }

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
	return e.coord.Submit(ctx, req.TxID, Branches(op, services))
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
	st, err := e.coord.Status(ctx)
	if err != nil {
		return false, err
	}
	if st.Inflight > 0 {
		return false, nil
	}
	for _, id := range Services {
		var n int
		err := e.services[id].Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { n = m.InDoubt() })
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
type State struct {
	Inventory inventory.State `json:"inventory"`
	Payment   payment.State   `json:"payment"`
	Order     order.State     `json:"order"`
	// InDoubt lists "service/tx" for every prepared branch without a
	// decision (empty after recovery).
	InDoubt     []string    `json:"in_doubt"`
	Coordinator CoordStatus `json:"coordinator"`
}

// CoordStatus is the coordinator's part of State.
type CoordStatus struct {
	Epoch    uint64 `json:"epoch"`
	Inflight int    `json:"inflight"`
}

// State reads the state of every component (their in-memory state, which
// is their log replayed plus what is in flight).
func (e *Engine) State(ctx context.Context) (State, error) {
	st := State{InDoubt: []string{}}
	cs, err := e.coord.Status(ctx)
	if err != nil {
		return st, err
	}
	st.Coordinator = CoordStatus{Epoch: cs.Epoch, Inflight: cs.Inflight}
	for _, id := range Services {
		err := e.services[id].Inspect(ctx, func(m *twopc.Participant, r participant.Resource) {
			for _, tx := range m.InDoubtTxs() {
				st.InDoubt = append(st.InDoubt, id+"/"+tx)
			}
			switch r := r.(type) {
			case *inventory.Store:
				st.Inventory = r.State()
			case *payment.Store:
				st.Payment = r.State()
			case *order.Store:
				st.Order = r.State()
			}
		})
		if err != nil {
			return st, fmt.Errorf("engine: %s: %w", id, err)
		}
	}
	if e.pg != nil {
		return st, e.storeState(ctx, &st)
	}
	return st, nil
}

// Check verifies the invariants of every service's state (DESIGN.md §3)
// and atomicity across them: every committed order has exactly one
// reservation and one charge, and nothing else does.
func (e *Engine) Check(ctx context.Context) error {
	var errs []error
	for _, id := range Services {
		err := e.services[id].Inspect(ctx, func(_ *twopc.Participant, r participant.Resource) {
			if c, ok := r.(interface{ Check() error }); ok {
				if err := c.Check(); err != nil {
					errs = append(errs, err)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	if e.pg != nil {
		errs = append(errs, e.pg.Check(ctx))
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
func CheckAtomic(st *State) []error {
	var errs []error
	ids := map[string]bool{}
	for tx := range st.Order.Orders {
		ids[tx] = true
	}
	for tx := range st.Inventory.Reservations {
		ids[tx] = true
	}
	for tx := range st.Payment.Charges {
		ids[tx] = true
	}
	for _, tx := range slices.Sorted(func(yield func(string) bool) {
		for id := range ids {
			if !yield(id) {
				return
			}
		}
	}) {
		o, inOrder := st.Order.Orders[tx]
		r, inInv := st.Inventory.Reservations[tx]
		c, inPay := st.Payment.Charges[tx]
		if !inOrder || !inInv || !inPay {
			errs = append(errs, fmt.Errorf("atomicity: %s committed partially (order %v, inventory %v, payment %v)", tx, inOrder, inInv, inPay))
			continue
		}
		if !sameItems(r.Items, o.Items) || c.UserID != o.UserID || c.Amount != o.Amount {
			errs = append(errs, fmt.Errorf("atomicity: %s records disagree: order %+v, reservation %+v, charge %+v", tx, o, r, c))
		}
	}
	return errs
}

// DrainTimeout bounds how long Close waits for unfinished transactions.
const DrainTimeout = 3 * time.Second

func sameItems(r []inventory.ReservedItem, o []purchase.LineItem) bool {
	if len(r) != len(o) {
		return false
	}
	for i := range r {
		if r[i].ItemID != o[i].ItemID || r[i].Quantity != o[i].Quantity {
			return false
		}
	}
	return true
}

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
	e.closeAll()
	e.wg.Wait()
	return e.lock.Close()
}

func (e *Engine) closeAll() {
	var errs []error
	if e.coord != nil {
		errs = append(errs, e.coord.Close())
	}
	for _, s := range e.services {
		errs = append(errs, s.Close())
	}
	if e.pg != nil {
		errs = append(errs, e.pg.Close())
	}
	if e.cancel != nil {
		e.cancel()
	}
	if err := errors.Join(errs...); err != nil {
		e.cfg.Logger.Error("close", "err", err)
	}
}

// loadWorld reads DIR/world.json, or writes w there if DIR is new.
func loadWorld(dir string, w *purchase.World) (purchase.World, bool, error) {
	path := filepath.Join(dir, "world.json")
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored, err := purchase.ParseWorld(data)
		if err != nil {
			return purchase.World{}, false, fmt.Errorf("engine: %s: %w", path, err)
		}
		if w != nil {
			given, _ := json.Marshal(w)
			have, _ := json.Marshal(stored)
			if !bytes.Equal(given, have) {
				return purchase.World{}, false, fmt.Errorf("engine: %s already holds a different world; use a new data directory for a new world", dir)
			}
		}
		return stored, false, nil
	case errors.Is(err, os.ErrNotExist):
		if w == nil {
			ex := purchase.ExampleWorld()
			w = &ex
		}
		data, err := json.MarshalIndent(w, "", "  ")
		if err != nil {
			return purchase.World{}, false, err
		}
		if err := writeFileSync(path, data); err != nil {
			return purchase.World{}, false, fmt.Errorf("engine: write %s: %w", path, err)
		}
		return *w, true, nil
	default:
		return purchase.World{}, false, fmt.Errorf("engine: %w", err)
	}
}

// writeFileSync writes a file atomically and durably: temp file, fsync,
// rename, fsync the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
}

// DeadlockStats returns the coordinator's deadlock counters.
func (e *Engine) DeadlockStats(ctx context.Context) (twopc.DeadlockStats, error) {
	return e.coord.DeadlockStats(ctx)
}

// Syncs returns the number of fdatasync calls made by every log so far
// (a crashed service's count restarts from zero).
func (e *Engine) Syncs() uint64 {
	n := e.coord.Log().Stats().Syncs
	for _, s := range e.services {
		n += s.LogStats().Syncs
	}
	return n
}

// NetStats returns the in-process network's counters.
func (e *Engine) NetStats() transport.NetStats { return e.net.Stats() }

// Crashes returns how many simulated service crashes happened.
func (e *Engine) Crashes() uint64 {
	var n uint64
	for _, s := range e.services {
		n += s.Stats().Crashes
	}
	return n
}
