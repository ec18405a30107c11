package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dtx-dev/dtx/sim"
	"github.com/dtx-dev/dtx/twopc"
)

type chaosFlags struct {
	seed       uint64
	runs       int
	txs        int
	faults     string
	workers    int
	mutant     string
	deadlock   string
	trace      bool
	faultTicks uint64
	progress   bool
	replicas   int
}

func chaosCmd() *cobra.Command {
	var f chaosFlags
	cmd := &cobra.Command{
		Use:   "chaos [--seed S] [--runs N] [--txs M] [--faults LIST]",
		Short: "Run a deterministic fault-simulation campaign that tries to break atomicity",
		Long: `Chaos runs the coordinator and the three services as their state machines,
carried out by the production driver, in one deterministic simulation: one
seed drives the workload (purchases on a few
hot items and buyers, resubmissions, business NO votes), the network (drop,
duplicate, delay and reorder, partition and heal), the clock, the disks
(fsync and write errors, lost unsynced tails, torn last records, power loss)
and crashes of any components at named crash points and during recovery.
Then everything heals, and checkers verify atomicity, that no COMMITTED
answer was lost, no duplicate effect, conservation of stock and money,
liveness (everything resolved, nothing in doubt, within a bound) and that
every log replays to the same state twice.

Run k uses seed S+k; the same seed and the same build replay the same run,
event for event. It prints how many faults of each kind were injected and
every violation with the command that replays it, and exits 1 if any.

Fault names for --faults (comma-separated): all, none, or groups net, drop,
dup, delay, partition, disk, crash, recovery, or single kinds as the table
prints them (e.g. crash.coord-mid-commit-send).

--replicas 3 (or 5) replaces the single coordinator with a replicated one:
that many coordinator replicas forming a raft group, each with its own disk,
hit by every fault a component gets, their raft messages on the same faulty
network; partitions often isolate the leader.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return chaosMain(&f) },
	}
	fl := cmd.Flags()
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the first run")
	fl.IntVar(&f.runs, "runs", 100, "number of runs (seeds seed..seed+runs-1)")
	fl.IntVar(&f.txs, "txs", 30, "transactions per run")
	fl.StringVar(&f.faults, "faults", "all", "fault kinds to inject (see above)")
	fl.IntVar(&f.workers, "workers", 0, "runs in parallel (0: one per CPU); results do not depend on it")
	fl.BoolVar(&f.trace, "trace", false, "print every event of the run (with --runs 1)")
	fl.Uint64Var(&f.faultTicks, "fault-ticks", sim.DefaultConfig(0).FaultTicks, "simulated ticks of faults before everything heals")
	fl.IntVar(&f.replicas, "replicas", 1, "coordinator replicas: 1 (a single coordinator), 3 or 5 (a raft group)")
	fl.BoolVar(&f.progress, "progress", true, "show a progress bar when stderr is a terminal")
	fl.StringVar(&f.mutant, "mutant", "", "plant a bug in the production driver or coordinator (to show the checkers catch it)")
	_ = fl.MarkHidden("mutant")
	fl.StringVar(&f.deadlock, "deadlock", "", "deadlock policy of every run: detect, wound-wait or timeout (default: each run draws one)")
	return cmd
}

func chaosMain(f *chaosFlags) error {
	if f.runs < 1 {
		return usagef("--runs %d: must be at least 1", f.runs)
	}
	if f.trace && f.runs != 1 {
		return usagef("--trace needs --runs 1")
	}
	faults, err := sim.ParseFaults(f.faults)
	if err != nil {
		return usagef("--faults: %v", err)
	}
	cfg := sim.DefaultConfig(f.seed)
	cfg.Txs = f.txs
	cfg.Replicas = f.replicas
	cfg.Faults = faults
	cfg.Mutant = sim.Mutant(f.mutant)
	if f.deadlock != "" {
		if cfg.Deadlock, err = twopc.ParseDeadlockPolicy(f.deadlock); err != nil {
			return usagef("--deadlock: %v", err)
		}
	}
	cfg.FaultTicks = f.faultTicks
	if err := cfg.Validate(); err != nil {
		return usagef("%v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	if f.trace {
		cfg.Trace = func(line string) { fmt.Fprintln(out, line) }
		r := sim.Run(cfg)
		var sum sim.Summary
		sum.Config = cfg
		sum.Add(&r)
		fmt.Fprintln(out)
		sum.Print(out)
		if len(sum.Violations) > 0 {
			return fmt.Errorf("%d violation(s)", len(sum.Violations))
		}
		return nil
	}

	var stopped atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; ok {
			stopped.Store(true)
		}
	}()
	var bar *progressbar.ProgressBar
	if f.progress && term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions(f.runs,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription("chaos"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	start := time.Now()
	sum := sim.Campaign(cfg, f.runs, f.workers, func(done int) {
		if bar != nil {
			_ = bar.Set(done)
		}
	}, stopped.Load)
	if bar != nil {
		_ = bar.Finish()
	}
	sum.Print(out)
	fmt.Fprintf(out, "time: %v\n", time.Since(start).Round(time.Millisecond))
	if stopped.Load() {
		fmt.Fprintf(out, "interrupted after %d of %d runs\n", sum.Runs, f.runs)
	}
	if len(sum.Violations) > 0 {
		return fmt.Errorf("%d violation(s) in %d run(s); each line above gives the command that replays it", len(sum.Violations), sum.BadRuns)
	}
	if stopped.Load() {
		return fmt.Errorf("interrupted")
	}
	return nil
}
