package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

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
	cmd := &cobra.Command{
		Use:   "load [--coordinator ADDR] --world FILE [--count N] [--concurrency 16,64,256]",
		Short: "Measure a running cluster: throughput, p50/p99 latency and transactions per network call, per concurrency",
		Long: `Load generates clean purchases for the cluster's world (new transaction ids
each run), sends them through the gRPC client API at each concurrency in turn,
and prints one line per concurrency: throughput, latency percentiles (from the
call to the durable outcome, as the client sees it), outcomes, and the mean
number of transaction messages per Deliver call over every component's
transport (read from each process's GET /v1/net before and after).`,
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
			fmt.Printf("%-11s %8s %10s %9s %9s %9s %10s %11s\n", "concurrency", "txs", "tx/s", "p50", "p99", "max", "committed", "msgs/call")
			for i, conc := range concs {
				if conc < 1 || conc > 4096 {
					return usagef("--concurrency %d: must be 1..4096", conc)
				}
				var buf bytes.Buffer
				opts := purchase.GenOptions{TxPrefix: fmt.Sprintf("%s%d-c%d-", prefix, time.Now().UnixNano(), conc)}
				if err := purchase.GenerateRequests(&buf, count, seed+int64(i), w, opts); err != nil {
					return err
				}
				var reqs []purchase.Request
				rd := purchase.NewReader(&buf)
				for rd.Scan() {
					if ln := rd.Line(); ln.Err == nil {
						reqs = append(reqs, ln.Req)
					}
				}
				before, err := netTotals(cmd.Context(), web, procs)
				if err != nil {
					return err
				}
				lat := make([]time.Duration, len(reqs))
				var committed, failed int
				var mu sync.Mutex
				jobs := make(chan int)
				var wg sync.WaitGroup
				start := time.Now()
				for range conc {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range jobs {
							t0 := time.Now()
							o, err := cl.Submit(cmd.Context(), &reqs[j])
							lat[j] = time.Since(t0)
							mu.Lock()
							switch {
							case err != nil:
								failed++
							case o.Committed:
								committed++
							}
							mu.Unlock()
						}
					}()
				}
				for j := range reqs {
					jobs <- j
				}
				close(jobs)
				wg.Wait()
				elapsed := time.Since(start)
				after, err := netTotals(cmd.Context(), web, procs)
				if err != nil {
					return err
				}
				slices.Sort(lat)
				pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
				perCall := 0.0
				if calls := after.TxCalls - before.TxCalls; calls > 0 {
					perCall = float64(after.TxSent-before.TxSent) / float64(calls)
				}
				fmt.Printf("%-11d %8d %10.0f %9s %9s %9s %10d %11.2f\n", conc, len(reqs), float64(len(reqs))/elapsed.Seconds(),
					pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), committed, perCall)
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
