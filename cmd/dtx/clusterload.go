package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dtx-dev/dtx/bench"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/transport/grpcnet"
	"github.com/dtx-dev/dtx/twopc"
)

// clusterLoadCmd measures a running cluster over gRPC.
func clusterLoadCmd() *cobra.Command {
	var coord, world, prefix, dir string
	var httpAddrs []string
	var count int
	var concs []int
	var seed int64
	var remote remoteFlags
	var rssPlot string
	var rssEvery time.Duration
	var progress bool
	cmd := &cobra.Command{
		Use:   "load [--coordinator ADDR] --world FILE [--count N] [--concurrency 16,64,256]",
		Short: "Measure a running cluster: throughput, p50/p99 latency and transactions per network call, per concurrency",
		Long: `Load generates clean purchases for the cluster's world (new transaction ids
each run), sends them through the gRPC client API at each concurrency in turn,
and prints one line per concurrency: throughput, latency percentiles (from the
call to the durable outcome, as the client sees it), outcomes, and the mean
number of transaction messages per Deliver call over every component's
transport (read from each process's GET /v1/net before and after).

Requests are generated as they are sent and latencies kept in a histogram, so
a level can run millions of purchases (the long mode: --count 10000000
--concurrency 256); --rss-plot (with --dir) draws every process's resident
set size over the run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if world == "" {
				return usagef("--world is required (the world file the services were started with)")
			}
			data, err := os.ReadFile(world)
			if err != nil {
				return usagef("--world: %v", err)
			}
			w, err := purchase.ParseWorld(data)
			if err != nil {
				return usagef("--world %s: %v", world, err)
			}
			if count < 1 || len(concs) == 0 {
				return usagef("--count and --concurrency must be positive")
			}
			procs := map[string]string{}
			for _, h := range httpAddrs {
				n, a, ok := strings.Cut(h, "=")
				if !ok {
					return usagef("--http %q: want NAME=HOST:PORT", h)
				}
				procs[n] = a
			}
			if len(procs) == 0 {
				for _, n := range clusterComponents {
					procs[n] = defaultAddr(n, true)
				}
			}
			remote.coordinator = coord
			if !cmd.Flags().Changed("coordinator") && dir != "" {
				// Every replica of a replicated coordinator: the client
				// follows the leader among them.
				if addrs, err := clusterCoordinators(dir); err != nil {
					return err
				} else if len(addrs) > 0 {
					remote.coordinator = strings.Join(addrs, ",")
				}
			}
			if remote.clusterDir == "" {
				remote.clusterDir = dir
			}
			web, err := clusterWeb(dir, &remote.tls)
			if err != nil {
				return err
			}
			cl, err := remote.dial()
			if err != nil {
				return err
			}
			defer cl.Close()
			var sampler *bench.RSSSampler
			var submitted atomic.Int64
			if rssPlot != "" {
				if dir == "" {
					return usagef("--rss-plot needs --dir (the cluster's cluster.json names the processes to sample)")
				}
				if rssEvery <= 0 {
					return usagef("--rss-every %v: must be positive", rssEvery)
				}
				cf, err := readClusterFile(dir)
				if err != nil {
					return err
				}
				pids := map[string]int{}
				for _, p := range cf.Processes {
					if _, err := bench.ReadRSS(p.PID); err != nil {
						return fmt.Errorf("--rss-plot: %s (pid %d): %w", p.Name, p.PID, err)
					}
					pids[p.Name] = p.PID
				}
				sampler = bench.SampleRSS(rssEvery, pids, submitted.Load)
				defer func() {
					ss := sampler.Stop()
					title := fmt.Sprintf("RSS of each cluster process under dtx cluster load (%d purchases a level)", count)
					if err := os.WriteFile(rssPlot, []byte(bench.PlotRSSSVG(title, ss)), 0o644); err != nil {
						fmt.Fprintf(os.Stderr, "dtx: --rss-plot: %v\n", err)
					}
					if err := bench.WriteRSSTSV(strings.TrimSuffix(rssPlot, ".svg")+".tsv", ss); err != nil {
						fmt.Fprintf(os.Stderr, "dtx: --rss-plot: %v\n", err)
					}
				}()
			}
			fmt.Printf("%-11s %8s %10s %9s %9s %9s %10s %11s\n", "concurrency", "txs", "tx/s", "p50", "p99", "max", "committed", "msgs/call")
			for i, conc := range concs {
				if conc < 1 || conc > 4096 {
					return usagef("--concurrency %d: must be 1..4096", conc)
				}
				before, err := netTotals(cmd.Context(), web, procs)
				if err != nil {
					return err
				}
				// The requests are generated as they are sent and latencies
				// go to a histogram, so a level of millions of purchases
				// (the long mode) holds neither in memory.
				pr, pw := io.Pipe()
				opts := purchase.GenOptions{TxPrefix: fmt.Sprintf("%s%d-c%d-", prefix, time.Now().UnixNano(), conc)}
				go func() { pw.CloseWithError(purchase.GenerateRequests(pw, count, seed+int64(i), w, opts)) }()
				var bar *progressbar.ProgressBar
				if progress && term.IsTerminal(int(os.Stderr.Fd())) {
					bar = progressbar.NewOptions(count, progressbar.OptionSetWriter(os.Stderr),
						progressbar.OptionSetDescription(fmt.Sprintf("concurrency %d", conc)), progressbar.OptionShowCount(),
						progressbar.OptionShowIts(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
				}
				hist := hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
				var maxLat time.Duration
				var sent, committed, failed int
				var mu sync.Mutex
				jobs := make(chan purchase.Request, conc)
				var wg sync.WaitGroup
				start := time.Now()
				for range conc {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for req := range jobs {
							t0 := time.Now()
							o, err := cl.Submit(cmd.Context(), &req)
							d := time.Since(t0)
							submitted.Add(1)
							mu.Lock()
							_ = hist.RecordValue(max(1, d.Microseconds()))
							maxLat = max(maxLat, d)
							switch {
							case err != nil:
								failed++
							case o.Committed:
								committed++
							}
							mu.Unlock()
							if bar != nil {
								_ = bar.Add(1)
							}
						}
					}()
				}
				rd := purchase.NewReader(pr)
				for rd.Scan() {
					if ln := rd.Line(); ln.Err == nil {
						jobs <- ln.Req
						sent++
					}
				}
				close(jobs)
				wg.Wait()
				elapsed := time.Since(start)
				if bar != nil {
					_ = bar.Finish()
				}
				if err := rd.Err(); err != nil {
					return fmt.Errorf("generate requests: %w", err)
				}
				after, err := netTotals(cmd.Context(), web, procs)
				if err != nil {
					return err
				}
				pct := func(q float64) time.Duration { return time.Duration(hist.ValueAtQuantile(q)) * time.Microsecond }
				perCall := 0.0
				if calls := after.TxCalls - before.TxCalls; calls > 0 {
					perCall = float64(after.TxSent-before.TxSent) / float64(calls)
				}
				fmt.Printf("%-11d %8d %10.0f %9s %9s %9s %10d %11.2f\n", conc, sent, float64(sent)/elapsed.Seconds(),
					pct(50).Round(10*time.Microsecond), pct(99).Round(10*time.Microsecond), maxLat.Round(10*time.Microsecond), committed, perCall)
				if failed > 0 {
					return fmt.Errorf("%d submissions got no outcome", failed)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&coord, "coordinator", defaultAddr(twopc.CoordinatorID, false), "gRPC address of the coordinator")
	fl.StringVar(&world, "world", "", "the world file the services were started with")
	fl.StringArrayVar(&httpAddrs, "http", nil, "NAME=HTTPADDR of every process, to read transport counters (default: the cluster addresses)")
	fl.IntVar(&count, "count", 5000, "purchases per concurrency level")
	fl.IntSliceVar(&concs, "concurrency", []int{16, 64, 256}, "concurrency levels")
	fl.Int64Var(&seed, "seed", 1, "generator seed")
	fl.StringVar(&prefix, "prefix", "load-", "transaction id prefix")
	remote.tls.add(fl)
	fl.StringVar(&dir, "dir", "", "the --dir of 'dtx cluster up': use its client and admin certificates")
	fl.StringVar(&rssPlot, "rss-plot", "", "with --dir: sample the resident set size of every process of the cluster (/proc/PID/statm) and write it over time as an SVG to this file, with the samples beside it (FILE.tsv); the transactions done so far are the second axis")
	fl.DurationVar(&rssEvery, "rss-every", time.Second, "interval between --rss-plot samples")
	fl.BoolVar(&progress, "progress", true, "show a progress bar when stderr is a terminal")
	return cmd
}

// netTotals sums the transport counters of every process.
func netTotals(ctx context.Context, web *client.HTTP, procs map[string]string) (grpcnet.Stats, error) {
	var sum grpcnet.Stats
	for name, addr := range procs {
		var st grpcnet.Stats
		if err := web.Get(ctx, addr, "/v1/net", &st); err != nil {
			return sum, fmt.Errorf("%s: %w", name, err)
		}
		sum.TxCalls += st.TxCalls
		sum.TxSent += st.TxSent
		sum.Calls += st.Calls
		sum.Sent += st.Sent
	}
	return sum, nil
}
