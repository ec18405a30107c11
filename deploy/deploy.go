// Package deploy assembles a dtx deployment on a data directory: the
// coordinator and the built-in services (package services), each with its
// own log under the directory, on one network. It owns the directory's
// layout (its lock, its world file, a log directory per component) and the
// protocol settings every component derives its machine's configuration
// from. The embedded engine opens a whole deployment with Open; a
// networked process (package server) builds its one component with
// CoordinatorConfig or ServiceConfig, so that a process per component
// behaves as the embedded deployment does.
//
// Data directory layout:
//
//	DIR/LOCK           held (flock) by the one process using DIR
//	DIR/world.json     the initial state, written once when DIR is created
//	DIR/coordinator/   the coordinator's log
//	DIR/inventory/     each service's log
//	DIR/payment/
//	DIR/order/
//	DIR/STORE          present if the services keep their state in PostgreSQL
//
// Every service's state is its initial state (world.json) plus its log, or,
// with a store (Config.Store, package services/pgstore), the rows of its
// tables in that PostgreSQL database, its log then holding only the
// protocol's records.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/failpoint"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/services/pgstore"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Protocol holds the protocol settings of a deployment, as durations; each
// component turns them into its machine's configuration in ticks.
type Protocol struct {
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
	// MaxInflight bounds unfinished transactions at the coordinator.
	MaxInflight int
	// DedupWindow is how long the coordinator keeps a finished
	// transaction's outcome for resubmissions of its id: at least this
	// long (of running time) and less than about 8/7 of it; then, until at
	// least twice this long, a resubmission is refused with "outcome
	// expired"; after that the id is new. 0 keeps every outcome forever.
	DedupWindow time.Duration
	// SnapshotEvery and SnapshotLogBytes say when each component (every
	// service, and a coordinator on a log of its own) snapshots its state
	// and compacts its log: after this long while records are logged, or
	// after this many bytes of records (0 and 0: never).
	SnapshotEvery    time.Duration
	SnapshotLogBytes uint64
	// DedupCount, with a DedupWindow, also ends a generation of outcomes
	// once it holds a seventh of this many, so at most about 8/7 of this
	// many outcomes are kept. 0: no count bound.
	DedupCount int
}

// DefaultProtocol returns the protocol settings of `dtx run`.
func DefaultProtocol() Protocol {
	return Protocol{
		Tick:           time.Millisecond,
		PrepareTimeout: time.Second,
		CommitRetry:    50 * time.Millisecond,
		LockTimeout:    500 * time.Millisecond,
		Deadlock:       twopc.DeadlockDetect,
		DetectEvery:    5 * time.Millisecond,
		MaxInflight:    1 << 16,
		DedupWindow:    24 * time.Hour,
		SnapshotEvery:  time.Minute,
		// About 1 MiB of log (at 125 B per transaction and service, 8,400
		// transactions): what a restart replays at most, some 15 ms. A
		// snapshot writes only what changed of the outcome tables since
		// the one before, so a short interval costs little.
		SnapshotLogBytes: 1 << 20,
	}
}

// Validate reports settings that cannot work.
func (p Protocol) Validate() error {
	switch {
	case p.Tick <= 0:
		return errors.New("tick must be > 0")
	case p.PrepareTimeout < p.Tick:
		return fmt.Errorf("prepare timeout %v is shorter than a tick (%v)", p.PrepareTimeout, p.Tick)
	case p.CommitRetry < p.Tick:
		return fmt.Errorf("commit retry %v is shorter than a tick (%v)", p.CommitRetry, p.Tick)
	case p.LockTimeout < p.Tick:
		return fmt.Errorf("lock timeout %v is shorter than a tick (%v)", p.LockTimeout, p.Tick)
	case p.MaxAttempts < 0:
		return fmt.Errorf("max attempts %d is negative (0: default %d, 1: no restarts)", p.MaxAttempts, twopc.DefaultMaxAttempts)
	case p.DedupWindow < 0:
		return fmt.Errorf("dedup window %v is negative (0: keep every outcome)", p.DedupWindow)
	case p.DedupWindow > 0 && p.DedupWindow < p.PrepareTimeout:
		return fmt.Errorf("dedup window %v is shorter than the prepare timeout (%v): a client could not resubmit in time", p.DedupWindow, p.PrepareTimeout)
	case p.SnapshotEvery < 0:
		return fmt.Errorf("snapshot interval %v is negative (0: no time trigger)", p.SnapshotEvery)
	case p.DedupCount < 0:
		return fmt.Errorf("dedup count %d is negative (0: no count bound)", p.DedupCount)
	case p.DedupCount > 0 && p.DedupWindow == 0:
		return errors.New("a dedup count needs a dedup window (0 keeps every outcome)")
	}
	return nil
}

// Ticks converts a duration to protocol ticks, rounding up, at least 1.
func Ticks(d, tick time.Duration) uint64 {
	n := uint64((d + tick - 1) / tick)
	return max(n, 1)
}

// ParticipantMachine returns the protocol configuration of service id.
func (p Protocol) ParticipantMachine(id string) twopc.ParticipantConfig {
	mc := twopc.DefaultParticipantConfig(id)
	mc.LockTimeout = Ticks(p.LockTimeout, p.Tick)
	mc.InquireAfter = Ticks(2*p.PrepareTimeout, p.Tick)
	mc.InquireMax = 5 * mc.InquireAfter
	mc.Deadlock = p.Deadlock
	if p.DetectEvery > 0 {
		mc.DetectEvery = Ticks(p.DetectEvery, p.Tick)
		mc.DetectAfter = mc.DetectEvery
	}
	if p.DedupWindow > 0 {
		// Twice the coordinator's: see twopc.Participant.rotate.
		mc.Retention = twopc.ParticipantRetention(Ticks(p.DedupWindow, p.Tick))
	}
	return mc
}

// CoordinatorMachine returns the coordinator's protocol configuration
// (without the jitter source).
func (p Protocol) CoordinatorMachine() twopc.CoordinatorConfig {
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = Ticks(p.PrepareTimeout, p.Tick)
	mc.RetryBase = Ticks(p.CommitRetry, p.Tick)
	mc.RetryMax = 20 * mc.RetryBase
	mc.MaxInflight = p.MaxInflight
	mc.MaxAttempts = p.MaxAttempts
	if p.DedupWindow > 0 {
		mc.Retention = Ticks(p.DedupWindow, p.Tick)
		mc.RetainMax = p.DedupCount
	}
	if p.DetectEvery > 0 {
		mc.WaitsTTL = 4 * Ticks(p.DetectEvery, p.Tick)
	}
	return mc
}

// LogDir is the directory of component id's log in dataDir.
func LogDir(dataDir, id string) string { return filepath.Join(dataDir, id) }

// CoordinatorConfig returns the configuration of the coordinator of the
// deployment in dataDir under p, on net, its log configured by log (Dir is
// set). The caller sets the jitter source, hooks and callbacks.
func CoordinatorConfig(dataDir string, p Protocol, net transport.Network, log wal.Config) coordinator.Config {
	return coordinator.Config{
		Dir:     LogDir(dataDir, twopc.CoordinatorID),
		Machine: p.CoordinatorMachine(),
		Tick:    p.Tick,
		Network: net,
		Log:     log,
		Snapshot: coordinator.SnapshotConfig{Every: p.SnapshotEvery, LogBytes: p.SnapshotLogBytes,
			Off: p.SnapshotEvery == 0 && p.SnapshotLogBytes == 0},
	}
}

// ServiceConfig returns the configuration of service id of the deployment
// in dataDir under p, on net, its log configured by log, its Resource
// built by newRes (a built-in service's New, or a user's own).
func ServiceConfig(dataDir, id string, p Protocol, net transport.Network, log wal.Config, newRes func() (participant.Resource, error)) participant.Config {
	return participant.Config{
		ID:          id,
		Dir:         LogDir(dataDir, id),
		NewResource: newRes,
		Machine:     p.ParticipantMachine(id),
		Tick:        p.Tick,
		Network:     net,
		Log:         log,
		Snapshot:    participant.SnapshotConfig{Every: p.SnapshotEvery, LogBytes: p.SnapshotLogBytes},
	}
}

// Config configures a whole deployment in one process.
type Config struct {
	// DataDir holds every log. Created if missing.
	DataDir string
	// World is the initial state for a new DataDir. For an existing one it
	// must be nil or equal to the stored world.
	World *purchase.World
	Protocol
	// Faults are the simulated failures of each service.
	Faults participant.Faults
	// NetFaults are the simulated failures of the in-process network.
	NetFaults transport.Faults
	// Failpoints kill the process at named crash points (tests).
	Failpoints failpoint.Set
	// Today is the date cards are checked against (zero: now).
	Today time.Time
	// SegmentSize of every log (0: the wal default).
	SegmentSize int64
	// WALPrealloc is the zero-fill chunk of every log (wal.Config
	// PreallocSize): 0 means the wal default (wal.DefaultPreallocSize), a
	// negative value turns preallocation off.
	WALPrealloc int64
	// Store, if set (postgres://…), keeps the services' state in that
	// PostgreSQL database instead of in their logs (package pgstore).
	Store string
	// Tracing, if set, makes spans of every transaction at the coordinator
	// and the services (package tracing). The caller shuts it down after
	// the deployment is closed.
	Tracing *tracing.Provider
	Logger  *slog.Logger
}

// DefaultConfig returns the defaults of `dtx run` with no faults.
func DefaultConfig(dir string) Config {
	return Config{DataDir: dir, Protocol: DefaultProtocol()}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("deploy: data directory is empty")
	}
	if err := c.Protocol.Validate(); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	for name, p := range map[string]float64{"fail rate": c.Faults.FailRate, "slow rate": c.Faults.SlowRate, "crash rate": c.Faults.CrashRate} {
		if p < 0 || p > 1 {
			return fmt.Errorf("deploy: %s %v is not a probability in [0, 1]", name, p)
		}
	}
	return nil
}

// LogConfig returns the configuration of every log of the deployment (Dir
// is set per component).
func (c Config) LogConfig() wal.Config {
	lc := wal.DefaultConfig("")
	if c.SegmentSize > 0 {
		lc.SegmentSize = c.SegmentSize
	}
	switch {
	case c.WALPrealloc > 0:
		lc.PreallocSize = c.WALPrealloc
	case c.WALPrealloc < 0:
		lc.PreallocSize = 0
	}
	return lc
}

// Deployment is the coordinator and the built-in services of one data
// directory, running in this process on an in-process network.
type Deployment struct {
	Config
	// World is the initial state (DIR/world.json).
	World purchase.World
	// Fresh says the data directory was new.
	Fresh bool
	// Net connects the components.
	Net *transport.MemNetwork
	// Coord is the coordinator.
	Coord *coordinator.Coordinator
	// Services are the built-in services, by ID.
	Services map[string]*participant.Service
	// Epoch and Inflight are the coordinator's, right after recovery.
	Epoch    uint64
	Inflight int
	// InDoubt lists, per service, the branches its log left in doubt.
	InDoubt map[string][]string
	// Opened is how long each component (a service's id, or
	// twopc.CoordinatorID) took to open: load its snapshot, replay its log.
	Opened map[string]time.Duration
	// PG is Config.Store's database, or nil (the services' logs).
	PG *pgstore.Store

	lock   *os.File
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// Open opens or creates the data directory, recovers every component from
// its log, and starts them all: the coordinator first, then the services,
// and returns once every loop is up (on the network), so that no in-doubt
// inquiry or first PREPARE is lost. onRecovered, if set, receives the
// outcomes the coordinator's recovery decides (on its loop goroutine).
func Open(cfg Config, onRecovered func(twopc.Outcome)) (*Deployment, error) {
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
		return nil, fmt.Errorf("deploy: data directory: %w", err)
	}
	lock, err := LockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	d := &Deployment{Config: cfg, lock: lock, Services: map[string]*participant.Service{}, InDoubt: map[string][]string{}, Opened: map[string]time.Duration{}, errs: make(chan error, 8)}
	if err := d.open(onRecovered); err != nil {
		d.closeAll()
		lock.Close()
		return nil, err
	}
	return d, nil
}

func (d *Deployment) open(onRecovered func(twopc.Outcome)) error {
	cfg := d.Config
	w, fresh, err := LoadWorld(cfg.DataDir, cfg.World)
	if err != nil {
		return err
	}
	d.World, d.Fresh = w, fresh
	d.Net = transport.NewMemNetwork(cfg.NetFaults, cfg.Faults.Seed^0xabcdef)
	logCfg := cfg.LogConfig()
	d.PG, err = OpenStore(StoreConfig{DataDir: cfg.DataDir, Store: cfg.Store, World: w, Fresh: fresh,
		Today: cfg.Today, LockTimeout: cfg.LockTimeout, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	// The four components open at once: each reads its own snapshot and
	// log, and after millions of transactions a restart is mostly this
	// replay (see docs/ARCHITECTURE.md, "Restart").
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs = make([]error, len(services.Builtin())+1)
	)
	for i, svc := range services.Builtin() {
		id := svc.ID
		faults := cfg.Faults
		faults.Seed = cfg.Faults.Seed*31 + uint64(i) + 1
		if faults.SlowDelay == 0 {
			faults.SlowDelay = cfg.PrepareTimeout * 3 / 2
		}
		if faults.Downtime == 0 {
			faults.Downtime = 20 * time.Millisecond
		}
		newRes := func() (participant.Resource, error) { return svc.New(w, cfg.Today), nil }
		if d.PG != nil {
			newRes = d.PG.NewResource(id)
		}
		sc := ServiceConfig(cfg.DataDir, id, cfg.Protocol, d.Net, logCfg, newRes)
		sc.Faults = faults
		sc.Hooks = cfg.Failpoints.Hooks(id)
		sc.SnapshotHook = cfg.Failpoints.SnapshotHook(id)
		sc.CompactHook = cfg.Failpoints.CompactHook(id)
		if sc.Log.FS == nil {
			sc.Log.FS = wal.OSFS()
		}
		sc.Log.FS = cfg.Failpoints.FS(id, sc.Log.FS)
		sc.Logger = cfg.Logger
		if cfg.Tracing != nil {
			sc.Tracer = tracing.NewParticipant(cfg.Tracing, id)
		}
		wg.Go(func() {
			start := time.Now()
			s, err := participant.Open(sc)
			if err != nil {
				errs[i] = err
				return
			}
			var inDoubt []string
			s.InspectStopped(func(m *twopc.Participant, _ participant.Resource) { inDoubt = m.InDoubtTxs() })
			mu.Lock()
			defer mu.Unlock()
			d.Services[id] = s
			if len(inDoubt) > 0 {
				d.InDoubt[id] = inDoubt
			}
			d.Opened[id] = time.Since(start)
		})
	}
	cc := CoordinatorConfig(cfg.DataDir, cfg.Protocol, d.Net, logCfg)
	rng := rand.New(rand.NewPCG(cfg.Faults.Seed, cfg.Faults.Seed^0x5851f42d4c957f2d))
	cc.Machine.Rand = rng.Uint64
	cc.Hooks = cfg.Failpoints.Hooks(twopc.CoordinatorID)
	cc.SnapshotHooks = node.SnapshotHooks{
		Step:          cfg.Failpoints.SnapshotHook(twopc.CoordinatorID),
		BeforeCompact: cfg.Failpoints.CompactHook(twopc.CoordinatorID),
	}
	if cc.Log.FS == nil {
		cc.Log.FS = wal.OSFS()
	}
	cc.Log.FS = cfg.Failpoints.FS(twopc.CoordinatorID, cc.Log.FS)
	cc.OnRecovered = onRecovered
	cc.Logger = cfg.Logger
	if cfg.Tracing != nil {
		cc.Tracer = tracing.NewCoordinator(cfg.Tracing, twopc.CoordinatorID)
	}
	wg.Go(func() {
		start := time.Now()
		c, err := coordinator.Open(cc)
		if err != nil {
			errs[len(errs)-1] = err
			return
		}
		mu.Lock()
		defer mu.Unlock()
		d.Coord = c
		d.Opened[twopc.CoordinatorID] = time.Since(start)
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.start(ctx, func(ctx context.Context) error { return d.Coord.Run(ctx) })
	// The coordinator answers only once its loop runs (and its inbox is on
	// the network): wait for that before the services send their first
	// in-doubt inquiries, so that none is lost.
	st, err := d.Coord.Status(context.Background())
	if err != nil {
		return err
	}
	for _, id := range services.IDs() {
		s := d.Services[id]
		d.start(ctx, func(ctx context.Context) error { return s.Run(ctx) })
	}
	// Likewise, a service's inbox is on the network once its loop runs:
	// wait for every one, so that no PREPARE of the first transactions is
	// lost.
	for _, id := range services.IDs() {
		if err := d.Services[id].Inspect(context.Background(), func(*twopc.Participant, participant.Resource) {}); err != nil {
			return fmt.Errorf("deploy: %s did not start: %w", id, err)
		}
	}
	d.Epoch, d.Inflight = st.Epoch, st.Inflight
	return nil
}

func (d *Deployment) start(ctx context.Context, run func(context.Context) error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := run(ctx); err != nil {
			select {
			case d.errs <- err:
			default:
			}
		}
	}()
}

// Err returns a fatal error of a component (a failed log), if any. Such a
// component has stopped; the process should exit and recover.
func (d *Deployment) Err() error {
	select {
	case err := <-d.errs:
		d.errs <- err
		return err
	default:
		return nil
	}
}

// Close stops every component, closes every log (syncing it) and releases
// the data directory.
func (d *Deployment) Close() error {
	d.closeAll()
	d.wg.Wait()
	return d.lock.Close()
}

func (d *Deployment) closeAll() {
	var errs []error
	if d.Coord != nil {
		errs = append(errs, d.Coord.Close())
	}
	for _, s := range d.Services {
		errs = append(errs, s.Close())
	}
	if d.PG != nil {
		errs = append(errs, d.PG.Close())
	}
	if d.cancel != nil {
		d.cancel()
	}
	if err := errors.Join(errs...); err != nil {
		d.Logger.Error("close", "err", err)
	}
}
