// Package bench drives purchases through an embedded dtx deployment with
// every record durable (fsync on, as in production) and measures it:
// throughput, aborts by reason, latency percentiles from an HdrHistogram,
// CPU time, allocations, fsyncs and messages per transaction. It also
// measures the machine's floor (one small write+fdatasync, one loopback
// TCP round trip) so results from noisy machines can be compared.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
)

// Config is one benchmark point.
type Config struct {
	// Dir is where the data directory is made (a fresh one per run).
	Dir string
	// Concurrency is the number of clients, each with one transaction in
	// flight.
	Concurrency int
	// Duration of the measured run.
	Duration time.Duration
	// HotKeys is the number of items and of buyers; purchases pick them
	// uniformly, so few hot keys mean heavy contention.
	HotKeys int
	// Deadlock is the deadlock policy.
	Deadlock twopc.DeadlockPolicy
	// NetJitter delays half of the in-process messages by up to this much,
	// which reorders them as a real network does (and lets PREPAREs reach
	// services in different orders: cross-service deadlocks).
	NetJitter time.Duration
	// LockTimeout and PrepareTimeout (0: the engine's defaults).
	LockTimeout, PrepareTimeout time.Duration
	// MaxAttempts bounds the runs of a deadlock victim (0: the default).
	MaxAttempts int
	// DedupWindow is the coordinator's outcome retention (mem transport;
	// 0: the engine's default; negative: keep every outcome).
	DedupWindow time.Duration
	// Participants per transaction: the first 1, 2 or 3 of inventory,
	// payment, order (0: all three).
	Participants int
	Seed         uint64
	// WALPrealloc is engine.Config.WALPrealloc (0: default, <0: off).
	WALPrealloc int64
	// Store, if set (postgres://…), keeps the services' state in a fresh
	// database of that server (engine.Config.Store), dropped after the run.
	Store string
	// TraceSample, if > 0, traces this fraction of the transactions in
	// every process (package tracing), exporting to TraceExporter:
	// "discard" (spans made, then dropped) or "stdout" (JSON to a file per
	// process in the run's directory). 0: tracing off.
	TraceSample   float64
	TraceExporter string
}

// traceConfig returns the tracing configuration of a process whose spans
// go to file (stdout exporter).
func (cfg Config) traceConfig(file string) tracing.Config {
	if cfg.TraceSample <= 0 {
		return tracing.Config{}
	}
	tc := tracing.Config{Exporter: cfg.TraceExporter, Sample: cfg.TraceSample}
	if tc.Exporter == "" {
		tc.Exporter = "discard"
	}
	if tc.Exporter == "stdout" {
		tc.Endpoint = file
	}
	return tc
}

// TraceLabel names a run's tracing: "off", or the percentage sampled.
func TraceLabel(sample float64) string {
	if sample <= 0 {
		return "off"
	}
	return strconv.FormatFloat(100*sample, 'g', 3, 64) + "%"
}

// services returns the participants of every transaction of cfg.
func (cfg Config) services() ([]string, error) {
	all := services.IDs()
	switch k := cfg.Participants; {
	case k == 0:
		return all, nil
	case k < 1 || k > len(all):
		return nil, fmt.Errorf("bench: %d participants: want 1 to %d (%s)", k, len(all), strings.Join(all, ", "))
	default:
		return all[:k], nil
	}
}

// Result is what one run measured.
type Result struct {
	Policy      string           `json:"policy"`
	Store       string           `json:"store"` // "log" or "postgres"
	Concurrency int              `json:"concurrency"`
	HotKeys     int              `json:"hot_keys"`
	Committed   int64            `json:"committed"`
	Aborted     int64            `json:"aborted"`
	Aborts      map[string]int64 `json:"aborts_by_reason"`
	Elapsed     time.Duration    `json:"elapsed_ns"`
	TxPerSec    float64          `json:"committed_per_sec"`
	AbortRate   float64          `json:"abort_rate"`
	P50         time.Duration    `json:"p50_ns"`
	P90         time.Duration    `json:"p90_ns"`
	P99         time.Duration    `json:"p99_ns"`
	P999        time.Duration    `json:"p999_ns"`
	CPUPerTx    time.Duration    `json:"cpu_per_tx_ns"`
	AllocsPerTx float64          `json:"allocs_per_tx"`
	FsyncsPerTx float64          `json:"fsyncs_per_tx"`
	MsgsPerTx   float64          `json:"messages_per_tx"`
	// Deadlocks broken by the coordinator (global cycles) and wounds, and
	// deadlock victims restarted instead of rolled back.
	Cycles   uint64 `json:"global_cycles"`
	Wounds   uint64 `json:"wounds"`
	Restarts uint64 `json:"restarts"`
	// DetectP50 is the median time from a global cycle formed to its victim
	// aborted (detect policy; 0 if no cycle).
	DetectP50 time.Duration `json:"detect_p50_ns"`
	// PGSyncsPerTx is PostgreSQL's WAL syncs per transaction (store
	// postgres; the whole server's, from pg_stat_wal).
	PGSyncsPerTx float64 `json:"pg_wal_syncs_per_tx,omitempty"`
	// Trace is the run's tracing: "off" or the percentage of transactions
	// traced (TraceLabel).
	Trace string `json:"trace"`
}

// AbortClass names the kind of a rollback reason.
func AbortClass(reason string) string {
	switch {
	case strings.Contains(reason, "deadlock: wounded"):
		return "wounded"
	case strings.Contains(reason, "deadlock: local cycle"):
		return "deadlock-local"
	case strings.Contains(reason, "deadlock"):
		return "deadlock-global"
	case strings.Contains(reason, "lock timeout"):
		return "lock-timeout"
	case strings.HasPrefix(reason, "prepare timeout"):
		return "prepare-timeout"
	}
	return "other"
}

const tick = time.Millisecond

// hotWorld is the benchmark's world: n items i0.. and n buyers u0.., with
// stock and money that never run out.
func hotWorld(n int) purchase.World {
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range n {
		w.Items["i"+strconv.Itoa(i)] = purchase.Item{Stock: purchase.MaxStock}
		w.Accounts["u"+strconv.Itoa(i)] = purchase.Account{Balance: purchase.MaxBalance}
	}
	return w
}

// Run runs one benchmark point on a fresh data directory.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Concurrency < 1 || cfg.HotKeys < 1 || cfg.Duration <= 0 {
		return Result{}, errors.New("bench: need concurrency >= 1, hot keys >= 1, duration > 0")
	}
	services, err := cfg.services()
	if err != nil {
		return Result{}, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "dtx-bench-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	w := hotWorld(cfg.HotKeys)
	ec := engine.DefaultConfig(filepath.Join(dir, "data"))
	ec.World = &w
	ec.Tick = tick
	ec.Deadlock = cfg.Deadlock
	ec.MaxAttempts = cfg.MaxAttempts
	switch {
	case cfg.DedupWindow > 0:
		ec.DedupWindow = cfg.DedupWindow
	case cfg.DedupWindow < 0:
		ec.DedupWindow = 0
	}
	ec.WALPrealloc = cfg.WALPrealloc
	if cfg.LockTimeout > 0 {
		ec.LockTimeout = cfg.LockTimeout
	}
	if cfg.PrepareTimeout > 0 {
		ec.PrepareTimeout = cfg.PrepareTimeout
	}
	ec.Faults = participant.Faults{Seed: cfg.Seed}
	if cfg.Store != "" {
		dsn, drop, err := freshDatabase(ctx, cfg.Store)
		if err != nil {
			return Result{}, err
		}
		defer drop()
		ec.Store = dsn
	}
	if cfg.NetJitter > 0 {
		ec.NetFaults = transport.Faults{Delay: 0.5, MaxDelay: cfg.NetJitter}
	}
	tp, err := tracing.Start(ctx, cfg.traceConfig(filepath.Join(dir, "trace.json")), "dtx")
	if err != nil {
		return Result{}, err
	}
	defer tp.Shutdown(context.Background())
	ec.Tracing = tp
	eng, err := engine.Open(ec)
	if err != nil {
		return Result{}, err
	}
	defer eng.Close()

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	syncs0 := eng.Syncs()
	msgs0 := eng.NetStats().Sent
	pg0 := int64(-1)
	if cfg.Store != "" {
		pg0 = walSyncs(ctx, cfg.Store)
	}
	ld, err := drive(ctx, cfg, "b", func(ctx context.Context, r *purchase.Request) (twopc.Outcome, error) {
		return eng.SubmitTo(ctx, r, services)
	})
	if err != nil {
		return Result{}, err
	}
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	res := ld.result(cfg)
	if cfg.Store != "" {
		res.Store = "postgres"
	}
	if total := res.Committed + res.Aborted; total > 0 {
		res.CPUPerTx = cpu / time.Duration(total)
		res.AllocsPerTx = float64(ms1.Mallocs-ms0.Mallocs) / float64(total)
		res.FsyncsPerTx = float64(eng.Syncs()-syncs0) / float64(total)
		res.MsgsPerTx = float64(eng.NetStats().Sent-msgs0) / float64(total)
		if pg1 := walSyncs(ctx, cfg.Store); pg0 >= 0 && pg1 >= pg0 {
			res.PGSyncsPerTx = float64(pg1-pg0) / float64(total)
		}
	}
	ds, err := eng.DeadlockStats(ctx)
	if err != nil {
		return res, err
	}
	res.Cycles, res.Wounds, res.Restarts = ds.Cycles, ds.Wounds, ds.Restarts
	if len(ds.DetectTicks) > 0 {
		t := slices.Clone(ds.DetectTicks)
		slices.Sort(t)
		res.DetectP50 = time.Duration(t[len(t)/2]) * tick
	}
	return res, nil
}

// load is what the clients of one run saw.
type load struct {
	hist      *hdrhistogram.Histogram
	committed int64
	aborts    map[string]int64
	elapsed   time.Duration
}

// drive runs cfg.Concurrency clients for cfg.Duration, each submitting one
// purchase at a time (transaction ids prefix<client>-<n>) over uniformly
// picked hot keys.
func drive(ctx context.Context, cfg Config, prefix string, submit func(context.Context, *purchase.Request) (twopc.Outcome, error)) (load, error) {
	type worker struct {
		committed int64
		aborts    map[string]int64
		err       error
	}
	// Latencies go to a few shared histograms (one each for thousands of
	// clients would cost more CPU than the clients themselves).
	type shard struct {
		mu   sync.Mutex
		hist *hdrhistogram.Histogram
	}
	shards := make([]shard, min(cfg.Concurrency, 16))
	for i := range shards {
		shards[i].hist = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	}
	workers := make([]*worker, cfg.Concurrency)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range workers {
		wk := &worker{aborts: map[string]int64{}}
		sh := &shards[i%len(shards)]
		workers[i] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
			card := purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2099}
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				req := purchase.Request{
					TxID:     prefix + strconv.Itoa(i) + "-" + strconv.Itoa(n),
					UserID:   "u" + strconv.Itoa(rng.IntN(cfg.HotKeys)),
					ItemID:   "i" + strconv.Itoa(rng.IntN(cfg.HotKeys)),
					Quantity: 1, Price: money.Cents(100), Amount: money.Cents(100), Card: card,
				}
				t0 := time.Now()
				o, err := submit(ctx, &req)
				if err != nil {
					wk.err = fmt.Errorf("bench: %s: %w", req.TxID, err)
					return
				}
				us := max(1, int64(time.Since(t0)/time.Microsecond))
				sh.mu.Lock()
				sh.hist.RecordValue(us)
				sh.mu.Unlock()
				if o.Committed {
					wk.committed++
				} else {
					wk.aborts[AbortClass(o.Reason)]++
				}
			}
		}()
	}
	wg.Wait()
	ld := load{hist: shards[0].hist, aborts: map[string]int64{}, elapsed: time.Since(start)}
	for i := 1; i < len(shards); i++ {
		ld.hist.Merge(shards[i].hist)
	}
	for _, wk := range workers {
		if wk.err != nil {
			return ld, wk.err
		}
		ld.committed += wk.committed
		for k, v := range wk.aborts {
			ld.aborts[k] += v
		}
	}
	if err := ctx.Err(); err != nil {
		return ld, err
	}
	return ld, nil
}

// result fills the fields of a Result that the clients measured.
func (ld load) result(cfg Config) Result {
	res := Result{
		Policy: cfg.Deadlock.String(), Store: "log", Concurrency: cfg.Concurrency, HotKeys: cfg.HotKeys,
		Aborts: map[string]int64{}, Elapsed: ld.elapsed, Committed: ld.committed,
		Trace: TraceLabel(cfg.TraceSample),
	}
	for k, v := range ld.aborts {
		res.Aborts[k] += v
		res.Aborted += v
	}
	res.TxPerSec = float64(res.Committed) / ld.elapsed.Seconds()
	if total := res.Committed + res.Aborted; total > 0 {
		res.AbortRate = float64(res.Aborted) / float64(total)
	}
	us := func(q float64) time.Duration { return time.Duration(ld.hist.ValueAtQuantile(q)) * time.Microsecond }
	res.P50, res.P90, res.P99, res.P999 = us(50), us(90), us(99), us(99.9)
	return res
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
