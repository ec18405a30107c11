package sim

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
)

// Summary adds up the runs of a campaign.
type Summary struct {
	Config     Config // the campaign's config (Seed is the first run's)
	Runs       int
	Injected   [numFaults]int // faults injected, per kind
	RunsWith   [numFaults]int // runs that injected the kind at least once
	Violations []Violation    // in seed order
	BadRuns    int            // runs with at least one violation
	Committed  int
	Aborted    int
	Crashes    int
	Restarts   int
	Snapshots  int // participant snapshots written
	// CoordSnapshots counts the coordinator's snapshots written,
	// CoordSnapshotLoads its restarts from one.
	CoordSnapshots, CoordSnapshotLoads int
	// TableBytes counts what snapshots appended to their table files.
	TableBytes uint64
	// ReplicaSnapshots counts the snapshot files replicas wrote,
	// ReplicaSnapshotLoads their restarts from one, and
	// ReplicaSnapshotFetches the files fetched from another replica by
	// one behind the group's compacted log.
	ReplicaSnapshots, ReplicaSnapshotLoads, ReplicaSnapshotFetches int
	// LedgerFlushes counts the moves of participants' ledger entries to
	// their files between snapshots.
	LedgerFlushes int
	Forgotten     uint64
	// ExpiredRefusals counts resubmissions refused as expired past the
	// window.
	ExpiredRefusals uint64
	// TxRestarts counts deadlock victims restarted as a new attempt.
	TxRestarts uint64
	MultiDown  int // crashes that left two or more components down at once
	MaxDown    int // most components down at the same moment, in any run
	// Leaderships counts the coordinator leaderships that started (a
	// replicated coordinator).
	Leaderships int
	Events      int64 // simulated events, all runs
	// HealToQuiet holds, per run, the ticks from healing to "everything
	// resolved, nothing in doubt".
	HealToQuiet []uint64
}

// Add adds one run's result.
func (s *Summary) Add(r *Result) {
	s.Runs++
	for f := range r.Injected {
		s.Injected[f] += r.Injected[f]
		if r.Injected[f] > 0 {
			s.RunsWith[f]++
		}
	}
	if len(r.Violations) > 0 {
		s.BadRuns++
		s.Violations = append(s.Violations, r.Violations...)
	}
	s.Committed += r.Committed
	s.Aborted += r.Aborted
	s.Crashes += r.Crashes
	s.Restarts += r.Restarts
	s.Snapshots += r.Snapshots
	s.CoordSnapshots += r.CoordSnapshots
	s.CoordSnapshotLoads += r.CoordSnapshotLoads
	s.TableBytes += r.TableBytes
	s.ReplicaSnapshots += r.ReplicaSnapshots
	s.ReplicaSnapshotLoads += r.ReplicaSnapshotLoads
	s.ReplicaSnapshotFetches += r.ReplicaSnapshotFetches
	s.LedgerFlushes += r.LedgerFlushes
	s.Forgotten += r.Forgotten
	s.ExpiredRefusals += r.ExpiredRefusals
	s.TxRestarts += r.TxRestarts
	s.MultiDown += r.MultiDown
	s.Leaderships += r.Leaderships
	s.MaxDown = max(s.MaxDown, r.MaxDown)
	s.Events += int64(r.Events)
	if r.QuietTick > 0 {
		s.HealToQuiet = append(s.HealToQuiet, r.QuietTick-r.HealTick)
	}
}

// Campaign runs cfg with seeds cfg.Seed, cfg.Seed+1, ... (runs of them) on
// workers goroutines (0: one per CPU). Every run is deterministic and
// independent, so the summary does not depend on workers. progress, if
// set, is called after each run with the number done (from one goroutine at
// a time). stop, if set, is polled between runs: true ends the campaign
// early (the summary then covers the runs done, in seed order).
func Campaign(cfg Config, runs, workers int, progress func(done int), stop func() bool) Summary {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([]*Result, runs)
	var mu sync.Mutex
	next, done := 0, 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= runs || (stop != nil && stop()) {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				c := cfg
				c.Seed = cfg.Seed + uint64(i)
				c.Trace = nil
				r := Run(c)
				mu.Lock()
				results[i] = &r
				done++
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sum := Summary{Config: cfg}
	for _, r := range results {
		if r != nil {
			sum.Add(r)
		}
	}
	return sum
}

// ReplayCommand returns the command that replays the run of seed under cfg.
func ReplayCommand(cfg Config, seed uint64) string {
	s := fmt.Sprintf("dtx chaos --seed %d --runs 1 --txs %d --faults %s", seed, cfg.Txs, cfg.Faults)
	if cfg.Deadlock != 0 {
		s += " --deadlock " + cfg.Deadlock.String()
	}
	if cfg.Mutant != MutantNone {
		s += " --mutant " + string(cfg.Mutant)
	}
	if cfg.Replicas > 1 {
		s += fmt.Sprintf(" --replicas %d", cfg.Replicas)
	}
	return s
}

// Percentile returns the p-th percentile (0..100) of xs, or 0 if empty.
func Percentile(xs []uint64, p float64) uint64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// Print writes the summary: a table of injected faults per kind, totals,
// and each violation with the command that replays it.
func (s *Summary) Print(w io.Writer) {
	cfg := s.Config
	fmt.Fprintf(w, "dtx chaos: %d runs (seeds %d..%d), %d transactions each, faults %s", s.Runs, cfg.Seed, cfg.Seed+uint64(max(s.Runs, 1)-1), cfg.Txs, cfg.Faults)
	if cfg.Mutant != MutantNone {
		fmt.Fprintf(w, ", mutant %s", cfg.Mutant)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tinjected\truns\t")
	for _, f := range Faults() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", f, s.Injected[f], s.RunsWith[f])
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "transactions: %d committed, %d rolled back\n", s.Committed, s.Aborted)
	fmt.Fprintf(w, "deadlock victims restarted (same id and timestamp): %d\n", s.TxRestarts)
	fmt.Fprintf(w, "crashes: %d (%d recoveries); %d left two or more components down at once (at most %d)\n",
		s.Crashes, s.Restarts, s.MultiDown, s.MaxDown)
	if cfg.Replicas > 1 {
		fmt.Fprintf(w, "coordinator replicas: %d; leaderships started: %d\n", cfg.Replicas, s.Leaderships)
		fmt.Fprintf(w, "replica snapshots written: %d; restarts from one: %d; fetched by a replica behind: %d\n", s.ReplicaSnapshots, s.ReplicaSnapshotLoads, s.ReplicaSnapshotFetches)
	}
	fmt.Fprintf(w, "participant snapshots written: %d; ledger flushes between snapshots: %d\ncoordinator snapshots written: %d; restarts from one: %d\nbytes appended to snapshots' table files: %d\n", s.Snapshots, s.LedgerFlushes, s.CoordSnapshots, s.CoordSnapshotLoads, s.TableBytes)
	fmt.Fprintf(w, "finished branches forgotten by participants (past their retention): %d\n", s.Forgotten)
	fmt.Fprintf(w, "resubmissions refused as expired (more than the window after their outcome): %d\n", s.ExpiredRefusals)
	fmt.Fprintf(w, "heal to quiet (ticks): p50 %d, p99 %d, max %d\n",
		Percentile(s.HealToQuiet, 50), Percentile(s.HealToQuiet, 99), Percentile(s.HealToQuiet, 100))
	fmt.Fprintf(w, "events: %d\n", s.Events)
	fmt.Fprintf(w, "violations: %d (in %d runs)\n", len(s.Violations), s.BadRuns)
	shown := 0
	for i, v := range s.Violations {
		if i > 0 && s.Violations[i-1].Seed == v.Seed {
			continue // one line per run
		}
		if shown == 50 {
			fmt.Fprintf(w, "... (more runs with violations not shown)\n")
			break
		}
		shown++
		fmt.Fprintf(w, "  VIOLATION %s\n    replay: %s\n", v, ReplayCommand(cfg, v.Seed))
	}
}
