package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dtx-dev/dtx/bench"
	"github.com/dtx-dev/dtx/twopc"
)

func benchCmd() *cobra.Command {
	var (
		conc         []int
		duration     time.Duration
		hotKeys      int
		policy       string
		jitter       time.Duration
		lockTimeout  time.Duration
		maxAttempts  int
		dedupWindow  time.Duration
		participants int
		transportArg string
		jsonOut      bool
		useTLS       bool
		plot         string
		dir          string
		seed         uint64
		cpuProfile   string
		memProfile   string
		grpcClient   string
		coordinators int
		streams      int
		serveFlags   []string
		walPrealloc  int64
		store        string
		traceSamples []float64
		traceExp     string
	)
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Benchmark durable purchases (fsync on) at several concurrency levels",
		Long: `Bench runs purchases through the embedded deployment (coordinator and three
services, every record durable) for --duration at each --concurrency level
and prints committed tx/s, abort rate by reason, latency percentiles, CPU
time, allocations, fsyncs and messages per transaction, and the same run's
machine floor (one write+fdatasync, one loopback round trip).

Few --hot-keys (items and buyers) make contention and deadlocks; --net-jitter
reorders messages as a real network does (cross-service deadlocks need it:
the in-process network otherwise delivers PREPAREs to every service in the
same order). --deadlock all compares the three policies.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if participants < 1 || participants > 3 {
				return usagef("--participants %d: want 1, 2 or 3 (the first of inventory, payment, order)", participants)
			}
			if transportArg != "mem" && transportArg != "grpc" {
				return usagef("--transport %q: want mem or grpc", transportArg)
			}
			if grpcClient != "stream" && grpcClient != "unary" {
				return usagef("--grpc-client %q: want stream or unary", grpcClient)
			}
			if coordinators != 1 && (transportArg != "grpc" || coordinators < 1 || coordinators%2 == 0) {
				return usagef("--coordinators %d: 1, or an odd number of replicas with --transport grpc", coordinators)
			}
			if transportArg == "grpc" && jitter > 0 {
				return usagef("--net-jitter is for --transport mem only")
			}
			if err := checkStore(store); err != nil {
				return err
			}
			if traceExp != "discard" && traceExp != "stdout" {
				return usagef("--trace-exporter %q: want discard or stdout", traceExp)
			}
			for _, s := range traceSamples {
				if s < 0 || s > 1 {
					return usagef("--trace-sample %v: want fractions in [0, 1] (0: tracing off)", s)
				}
			}
			if store != "" && transportArg != "mem" {
				return usagef("--store is for --transport mem only")
			}
			stores := []string{""} // the services' logs
			if store != "" {
				stores = append(stores, store) // and PostgreSQL, at each level, in the same run
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if hotKeys < 1 || duration <= 0 || len(conc) == 0 {
				return usagef("need --hot-keys >= 1, --duration > 0 and at least one --concurrency")
			}
			for _, c := range conc {
				if c < 1 || c > 4096 {
					return usagef("--concurrency %d: must be between 1 and 4096", c)
				}
			}
			var policies []twopc.DeadlockPolicy
			if policy == "all" {
				policies = []twopc.DeadlockPolicy{twopc.DeadlockDetect, twopc.DeadlockWoundWait, twopc.DeadlockTimeout}
			} else {
				p, err := twopc.ParseDeadlockPolicy(policy)
				if err != nil {
					return usagef("--deadlock: %v (or all)", err)
				}
				policies = []twopc.DeadlockPolicy{p}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if memProfile != "" {
				runtime.MemProfileRate = 64 << 10
				defer func() {
					if err := writeHeapProfile(memProfile); err != nil {
						fmt.Fprintf(os.Stderr, "bench: %v\n", err)
					}
				}()
			}
			tty := term.IsTerminal(int(os.Stderr.Fd()))
			floor, err := bench.MeasureFloor(dir)
			if err != nil {
				return fmt.Errorf("measuring the machine floor: %w", err)
			}
			var results []bench.Result
			for _, p := range policies {
				for _, c := range conc {
					for _, st := range stores {
						for _, ts := range traceSamples {
							if tty {
								fmt.Fprintf(os.Stderr, "\rbench: %s at concurrency %d (trace %s) for %v...   ", p, c, bench.TraceLabel(ts), duration)
							}
							bc := bench.Config{
								Store: st,
								Dir:   dir, Concurrency: c, Duration: duration, HotKeys: hotKeys, Deadlock: p,
								NetJitter: jitter, LockTimeout: lockTimeout, MaxAttempts: maxAttempts, Participants: participants, Seed: seed,
								WALPrealloc: walPrealloc, DedupWindow: dedupWindow,
								TraceSample: ts, TraceExporter: traceExp,
							}
							var r bench.Result
							if transportArg == "grpc" {
								gc := bench.GRPCConfig{Config: bc, Binary: self, Unary: grpcClient == "unary", Streams: streams, ServeFlags: serveFlags, TLS: useTLS, Coordinators: coordinators}
								if cpuProfile != "" {
									gc.ProfilePrefix = cpuProfile
								}
								r, err = bench.RunGRPC(ctx, gc)
							} else {
								r, err = bench.Run(ctx, bc)
							}
							if err != nil {
								return err
							}
							results = append(results, r)
							if ctx.Err() != nil {
								return ctx.Err()
							}
						}
					}
				}
			}
			if tty {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
			if jsonOut {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Floor   bench.Floor    `json:"floor"`
					Results []bench.Result `json:"results"`
				}{floor, results}); err != nil {
					return err
				}
			} else {
				printBench(os.Stdout, floor, results)
			}
			if plot != "" {
				if err := os.WriteFile(plot, []byte(bench.PlotSVG(results)), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "bench: wrote %s\n", plot)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntSliceVar(&conc, "concurrency", []int{1, 16, 64, 256}, "concurrency levels (clients with one transaction in flight each)")
	fl.DurationVar(&duration, "duration", 5*time.Second, "measured time per level")
	fl.IntVar(&hotKeys, "hot-keys", 10000, "number of items and of buyers (few = contention)")
	fl.StringVar(&policy, "deadlock", "detect", "deadlock policy: detect, wound-wait, timeout, or all")
	fl.DurationVar(&jitter, "net-jitter", 0, "delay half the messages by up to this much (reorders them)")
	fl.DurationVar(&lockTimeout, "lock-timeout", 0, "lock-wait timeout (0: engine default 500ms)")
	fl.DurationVar(&dedupWindow, "dedup-window", 0, "mem: the coordinator's outcome retention (0: the default, 24h; negative: keep every outcome, as before)")
	fl.IntVar(&maxAttempts, "max-attempts", twopc.DefaultMaxAttempts, "most runs of a deadlock victim: it is restarted with its id and timestamp instead of rolled back (1: no restarts)")
	fl.IntVar(&participants, "participants", 3, "participants per transaction: 1 (inventory), 2 (and payment) or 3 (and order)")
	fl.StringVar(&transportArg, "transport", "mem", "transport: mem (one process) or grpc (four dtx serve processes on loopback)")
	fl.StringVar(&grpcClient, "grpc-client", "stream", "grpc: stream (transactions share SubmitStream streams) or unary (one call each)")
	fl.IntVar(&streams, "streams", 0, "grpc: client streams (0: the client's default)")
	fl.IntVar(&coordinators, "coordinators", 1, "grpc: 1 coordinator, or this many replicas of a replicated coordinator (3, 5)")
	fl.BoolVar(&useTLS, "tls", true, "grpc: mutual TLS and authorization between every process, as a deployment runs (--tls=false: plaintext, to measure their cost)")
	fl.StringArrayVar(&serveFlags, "serve-flag", nil, "grpc: extra flag for every dtx serve, e.g. --serve-flag=--streams=2 (repeatable)")
	fl.Int64Var(&walPrealloc, "wal-prealloc", 0, "mem: zero-fill chunk of every log in bytes (0: the wal default, 4 MiB; -1: no preallocation)")
	fl.StringVar(&store, "store", "", "also run every level with the services' state in PostgreSQL (postgres://…; a fresh database of that server per run), next to the built-in store")
	fl.Float64SliceVar(&traceSamples, "trace-sample", []float64{0}, "trace this fraction of the transactions in every process, one run per value at each level, e.g. 0,0.01,1 (0: tracing off)")
	fl.StringVar(&traceExp, "trace-exporter", "discard", "where traced spans go: discard (made, then dropped) or stdout (JSON, a file per process in the run's directory)")
	fl.BoolVar(&jsonOut, "json", false, "print JSON")
	fl.StringVar(&plot, "plot", "", "write an SVG plot of throughput and p99 latency against concurrency")
	fl.StringVar(&dir, "dir", ".dtx-bench", "where to put the benchmark's data directories (on the disk under test)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the workload")
	fl.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the whole run to this file")
	fl.StringVar(&memProfile, "memprofile", "", "write an allocation profile (pprof; go tool pprof -sample_index=alloc_space) of the whole run to this file")
	return cmd
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printBench(w io.Writer, floor bench.Floor, rs []bench.Result) {
	fmt.Fprintf(w, "machine floor: %.0f fdatasync/s (one 64-byte write+fdatasync at a time), loopback round trip %v\n\n",
		floor.FsyncPerSec, floor.LoopbackRTT.Round(time.Microsecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tconc\ttx/s\tx floor\tabort%\tp50\tp90\tp99\tp99.9\tcpu/tx\tallocs/tx\tfsync/tx\tmsgs/tx\tdetect p50\trestarts\taborts by reason\t")
	for _, r := range rs {
		var reasons []string
		for k, v := range r.Aborts {
			reasons = append(reasons, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(reasons)
		det := "-"
		if r.Cycles > 0 {
			det = r.DetectP50.String()
		}
		policy := r.Policy
		if r.Store == "postgres" {
			policy += "/pg"
		}
		if r.Trace != "" && r.Trace != "off" {
			policy += "/trace " + r.Trace
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.1f\t%v\t%v\t%v\t%v\t%v\t%.0f\t%.2f\t%.1f\t%s\t%d\t%s\t\n",
			policy, r.Concurrency, r.TxPerSec, r.TxPerSec/floor.FsyncPerSec, 100*r.AbortRate,
			ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), r.CPUPerTx.Round(time.Microsecond), r.AllocsPerTx,
			r.FsyncsPerTx, r.MsgsPerTx, det, r.Restarts, strings.Join(reasons, " "))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nx floor: committed tx/s divided by the machine's one-at-a-time fdatasync rate.")
	for _, r := range rs {
		if r.Store == "postgres" {
			fmt.Fprintln(w, "/pg: the services' state in PostgreSQL (--store); fsync/tx counts dtx's logs only. PostgreSQL's WAL syncs per transaction:")
			for _, r := range rs {
				if r.Store == "postgres" {
					fmt.Fprintf(w, "  %s/pg conc %d: %.1f\n", r.Policy, r.Concurrency, r.PGSyncsPerTx)
				}
			}
			break
		}
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
