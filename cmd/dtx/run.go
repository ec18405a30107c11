package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/failpoint"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
)

type runFlags struct {
	dataDir        string
	world          string
	input          string
	concurrency    int
	seed           uint64
	failRate       float64
	slowRate       float64
	crashRate      float64
	prepareTimeout time.Duration
	commitRetry    time.Duration
	lockTimeout    time.Duration
	json           bool
	progress       bool
	deadlock       string
	dedupWindow    time.Duration
	snapshotEvery  time.Duration
	snapshotBytes  uint64
	segmentBytes   int64
	dedupCount     int
	maxAttempts    int
	store          string
	remote         remoteFlags
	trace          traceFlags
	diag           diagFlags
}

func runCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags]",
		Short: "Run purchases (JSON Lines) atomically across inventory, payment and order",
		Long: `Run reads purchase requests, one JSON object a line, and runs each as one
atomic transaction across the inventory, payment and order services, which run
in this process and fail at random (see the rate flags). It prints one line
per input line, as each transaction finishes (not in input order):

  <transaction_id> COMMITTED
  <transaction_id> ROLLED_BACK <reason>
  line <N> REJECTED <reason>

A transaction_id seen before is not run again: its first outcome is printed,
marked "(duplicate)". A summary goes to stderr. The data directory keeps every
log; any command that opens it recovers first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMain(cmd.Context(), &f) },
	}
	fl := cmd.Flags()
	f.trace.add(fl)
	fl.StringVar(&f.dataDir, "data-dir", "dtx-data", "data directory (created if missing)")
	fl.StringVar(&f.world, "world", "", "JSON file with the initial state of a new data directory (default: the built-in example world)")
	fl.StringVar(&f.input, "input", "-", "JSON Lines file of requests, or - for standard input")
	fl.IntVar(&f.concurrency, "concurrency", 16, "transactions in flight at once (1 to 4096)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the simulated failures")
	fl.Float64Var(&f.failRate, "fail-rate", 0.01, "probability that a service fails a PREPARE (votes NO)")
	fl.Float64Var(&f.slowRate, "slow-rate", 0.002, "probability that a service answers a PREPARE too late")
	fl.Float64Var(&f.crashRate, "crash-rate", 0.0005, "probability per branch that a service crashes in the prepare or commit phase")
	fl.DurationVar(&f.prepareTimeout, "prepare-timeout", 500*time.Millisecond, "time for all votes to arrive before a rollback")
	fl.DurationVar(&f.commitRetry, "commit-retry", 50*time.Millisecond, "first delay between resends of a decision (backs off)")
	fl.DurationVar(&f.lockTimeout, "lock-timeout", 250*time.Millisecond, "longest wait for a lock at a service before it votes NO")
	fl.IntVar(&f.maxAttempts, "max-attempts", twopc.DefaultMaxAttempts, "most runs of a deadlock victim: it is restarted with its id and timestamp instead of rolled back (1: no restarts)")
	fl.DurationVar(&f.dedupWindow, "dedup-window", 24*time.Hour, "keep each outcome this long (of running time, up to about 8/7 of it) for resubmissions of its id; then \"outcome expired\" until at least twice this long, then the id is new (0: keep every outcome forever)")
	fl.IntVar(&f.dedupCount, "dedup-count", 0, "with --dedup-window, also start a new generation of outcomes every seventh of this many (at most about 8/7 of this many kept; 0: no count bound)")
	fl.DurationVar(&f.snapshotEvery, "snapshot-every", time.Minute, "each component (services and coordinator) snapshots its state and compacts its log this often while it logs (0: no time trigger)")
	fl.Uint64Var(&f.snapshotBytes, "snapshot-log-bytes", 1<<20, "each component also snapshots after this many bytes of log records (0: no size trigger; both 0: never, and the logs keep every record)")
	fl.StringVar(&f.deadlock, "deadlock", "detect", "deadlock policy: detect (wait-for graphs), wound-wait, or timeout (lock timeouts only)")
	fl.StringVar(&f.store, "store", "", "keep the services' state in this PostgreSQL database (postgres://…) instead of their logs")
	fl.BoolVar(&f.json, "json", false, "print results as JSON objects, one a line")
	fl.BoolVar(&f.progress, "progress", true, "show a progress bar when stderr is a terminal")
	addRemoteFlags(fl, &f.remote)
	addDiagFlags(fl, &f.diag)
	fl.Int64Var(&f.segmentBytes, "wal-segment-bytes", 0, "size of each log segment of a new log (0: the default, 8 MiB); small ones let tests see compactions")
	fl.MarkHidden("wal-segment-bytes")
	return cmd
}

// result is one output line.
type result struct {
	Line      int    `json:"line"`
	TxID      string `json:"transaction_id,omitempty"`
	Status    string `json:"status"` // COMMITTED, ROLLED_BACK, REJECTED
	Reason    string `json:"reason,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (r *result) text() string {
	var b strings.Builder
	if r.Status == "REJECTED" {
		fmt.Fprintf(&b, "line %d REJECTED %s", r.Line, r.Reason)
		return b.String()
	}
	b.WriteString(r.TxID)
	b.WriteByte(' ')
	b.WriteString(r.Status)
	if r.Reason != "" {
		b.WriteByte(' ')
		b.WriteString(r.Reason)
	}
	if r.Duplicate {
		b.WriteString(" (duplicate)")
	}
	return b.String()
}

func checkRate(name string, p float64) error {
	if p < 0 || p > 1 || p != p {
		return usagef("--%s %v: must be a probability between 0 and 1", name, p)
	}
	return nil
}

func runMain(ctx context.Context, f *runFlags) error {
	if f.concurrency < 1 || f.concurrency > 4096 {
		return usagef("--concurrency %d: must be between 1 and 4096", f.concurrency)
	}
	for name, p := range map[string]float64{"fail-rate": f.failRate, "slow-rate": f.slowRate, "crash-rate": f.crashRate} {
		if err := checkRate(name, p); err != nil {
			return err
		}
	}
	for name, d := range map[string]time.Duration{"prepare-timeout": f.prepareTimeout, "commit-retry": f.commitRetry, "lock-timeout": f.lockTimeout} {
		if d < time.Millisecond {
			return usagef("--%s %v: must be at least 1ms", name, d)
		}
	}
	policy, err := twopc.ParseDeadlockPolicy(f.deadlock)
	if err != nil {
		return usagef("--deadlock: %v", err)
	}
	if err := checkStore(f.store); err != nil {
		return err
	}
	var world *purchase.World
	if f.world != "" {
		data, err := os.ReadFile(f.world)
		if err != nil {
			return usagef("--world: %v", err)
		}
		w, err := purchase.ParseWorld(data)
		if err != nil {
			return usagef("--world %s: %v", f.world, err)
		}
		world = &w
	}
	in, size, err := openInput(f.input)
	if err != nil {
		return err
	}
	defer in.Close()

	cfg := engine.DefaultConfig(f.dataDir)
	cfg.World = world
	cfg.PrepareTimeout = f.prepareTimeout
	cfg.CommitRetry = f.commitRetry
	cfg.LockTimeout = f.lockTimeout
	cfg.Deadlock = policy
	cfg.MaxAttempts = f.maxAttempts
	cfg.Store = f.store
	cfg.DedupWindow = f.dedupWindow
	cfg.DedupCount = f.dedupCount
	cfg.SnapshotEvery = f.snapshotEvery
	cfg.SnapshotLogBytes = f.snapshotBytes
	if f.segmentBytes < 0 {
		return usagef("--wal-segment-bytes %d: must not be negative", f.segmentBytes)
	}
	cfg.SegmentSize = f.segmentBytes
	cfg.Faults = participant.Faults{FailRate: f.failRate, SlowRate: f.slowRate, CrashRate: f.crashRate, Seed: f.seed}
	if cfg.Failpoints, err = failpoint.FromEnv(); err != nil {
		return usagef("%s: %v", failpoint.EnvVar, err)
	}
	var eng submitter
	if f.remote.coordinator != "" {
		cl, err := f.remote.dial()
		if err != nil {
			return err
		}
		defer cl.Close()
		eng = cl
	} else {
		tc, err := f.trace.config()
		if err != nil {
			return err
		}
		if tc.Exporter == "stdout" && (tc.Endpoint == "" || tc.Endpoint == "-") {
			return usagef("--trace stdout: dtx run prints its outcomes on standard output; give --trace-endpoint FILE")
		}
		tp, err := tracing.Start(ctx, tc, "dtx")
		if err != nil {
			return err
		}
		defer tp.Shutdown(context.Background())
		cfg.Tracing = tp
		e, err := engine.Open(cfg)
		if err != nil {
			return err
		}
		defer e.Close()
		if rep := e.Report(); !rep.Fresh && (len(rep.InDoubt) > 0 || rep.Unfinished > 0) {
			fmt.Fprintf(os.Stderr, "dtx: recovering %s: %d unfinished transactions at the coordinator, in doubt: %v\n", f.dataDir, rep.Unfinished, rep.InDoubt)
		}
		eng = e
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	var outMu sync.Mutex
	var sum summary
	var done atomic.Int64
	stopDiag, err := f.diag.start("dtx run: resident set size", done.Load)
	if err != nil {
		return err
	}
	defer stopDiag()
	emit := func(r *result) {
		sum.add(r)
		done.Add(1)
		outMu.Lock()
		defer outMu.Unlock()
		if f.json {
			b, _ := json.Marshal(r)
			out.Write(b)
		} else {
			out.WriteString(r.text())
		}
		out.WriteByte('\n')
	}
	// Flush output often enough that a reader sees lines as they come,
	// and always before we exit.
	flushDone := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				outMu.Lock()
				out.Flush()
				outMu.Unlock()
			case <-flushDone:
				return
			}
		}
	}()

	var bar *progressbar.ProgressBar
	counting := &countingReader{r: in}
	if f.progress && size > 0 && term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription("running"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}

	start := time.Now()
	jobs := make(chan purchase.Line, f.concurrency)
	var wg sync.WaitGroup
	var fatal atomic.Pointer[error]
	for range f.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ln := range jobs {
				o, err := eng.Submit(ctx, &ln.Req)
				if errors.Is(err, twopc.ErrOutcomeExpired) {
					// Used before, outcome no longer kept: not run again.
					emit(&result{Line: ln.No, TxID: ln.Req.TxID, Status: "REJECTED", Reason: "outcome expired: this transaction_id was used and its outcome is past --dedup-window; it was not run again"})
					continue
				}
				if err != nil {
					if fatal.Load() == nil {
						e := fmt.Errorf("line %d (%s) was not run: %w", ln.No, ln.Req.TxID, err)
						fatal.CompareAndSwap(nil, &e)
					}
					continue
				}
				r := &result{Line: ln.No, TxID: ln.Req.TxID, Status: "ROLLED_BACK", Reason: o.Reason, Duplicate: o.Duplicate}
				if o.Committed {
					r.Status, r.Reason = "COMMITTED", ""
				}
				emit(r)
			}
		}()
	}
	rd := purchase.NewReader(counting)
	lastBar := int64(0)
	for rd.Scan() {
		ln := rd.Line()
		if bar != nil {
			if n := counting.n.Load(); n-lastBar > 1<<16 {
				bar.Set64(n)
				lastBar = n
			}
		}
		if ln.Err != nil {
			emit(&result{Line: ln.No, Status: "REJECTED", Reason: ln.Err.Error()})
			continue
		}
		if fatal.Load() != nil || ctx.Err() != nil {
			break
		}
		select {
		case jobs <- ln:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if bar != nil {
		bar.Finish()
	}
	close(flushDone)
	outMu.Lock()
	out.Flush()
	outMu.Unlock()
	elapsed := time.Since(start)
	sum.print(os.Stderr, elapsed, eng)
	if err := rd.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", f.input, err)
	}
	if p := fatal.Load(); p != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", *p)
		}
		return *p
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; every printed outcome is durable, unprinted requests may need to be resubmitted")
	}
	return nil
}

func openInput(name string) (io.ReadCloser, int64, error) {
	if name == "-" {
		if term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, 0, usagef("no input: give --input FILE or pipe JSON Lines into standard input")
		}
		return io.NopCloser(os.Stdin), 0, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, usagef("--input: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, usagef("--input: %v", err)
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, usagef("--input %s: is a directory", name)
	}
	return f, st.Size(), nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// summary counts outcomes for the closing report.
type summary struct {
	mu         sync.Mutex
	committed  int
	rolledBack int
	rejected   int
	duplicates int
	reasons    map[string]int
}

func (s *summary) add(r *result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Duplicate {
		s.duplicates++
	}
	switch r.Status {
	case "COMMITTED":
		s.committed++
	case "ROLLED_BACK":
		s.rolledBack++
		if s.reasons == nil {
			s.reasons = map[string]int{}
		}
		s.reasons[reasonClass(r.Reason)]++
	case "REJECTED":
		s.rejected++
	}
}

// reasonClass shortens a rollback reason to its kind, for the summary.
func reasonClass(reason string) string {
	switch {
	case strings.HasPrefix(reason, "prepare timeout"):
		return "prepare timeout"
	case strings.Contains(reason, "lock timeout"):
		svc, _, _ := strings.Cut(reason, ":")
		return svc + ": lock timeout"
	case strings.Contains(reason, "simulated failure"):
		return "simulated failure"
	}
	svc, rest, ok := strings.Cut(reason, ": ")
	if !ok {
		return reason
	}
	words := strings.Fields(rest)
	if len(words) > 2 {
		words = words[:2]
	}
	return svc + ": " + strings.Join(words, " ")
}

func (s *summary) print(w io.Writer, elapsed time.Duration, eng submitter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	txs := s.committed + s.rolledBack - s.duplicates // transactions run here
	rate := float64(txs) / elapsed.Seconds()
	fmt.Fprintf(w, "dtx: %d committed, %d rolled back, %d rejected in %.2fs (%.0f tx/s)",
		s.committed, s.rolledBack, s.rejected, elapsed.Seconds(), rate)
	if s.duplicates > 0 {
		fmt.Fprintf(w, "; %d of the outcomes are duplicates (an id seen before: its first outcome, nothing run twice)", s.duplicates)
	}
	fmt.Fprintln(w)
	if len(s.reasons) > 0 {
		keys := make([]string, 0, len(s.reasons))
		for k := range s.reasons {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return s.reasons[keys[i]] > s.reasons[keys[j]] || (s.reasons[keys[i]] == s.reasons[keys[j]] && keys[i] < keys[j])
		})
		fmt.Fprint(w, "dtx: rollbacks:")
		for _, k := range keys {
			fmt.Fprintf(w, " %s=%d;", k, s.reasons[k])
		}
		fmt.Fprintln(w)
	}
	if c := eng.Crashes(); c > 0 {
		fmt.Fprintf(w, "dtx: simulated service crashes: %d (each recovered from its log)\n", c)
	}
}
