// Command pgshipping-demo runs purchases across the built-in inventory,
// payment and order services and the example shipping service, whose
// state is in PostgreSQL (prepared transactions), all in one process:
//
//	go run ./internal/pgtest/cmd/pgserver --dir /tmp/dtx-pg &   # prints a DSN
//	go run ./examples/pgshipping/cmd/pgshipping-demo \
//	    --store postgres://postgres@127.0.0.1:5433/postgres \
//	    --input examples/requests.jsonl
//
// It prints one line per request, like dtx run, then checks from the rows
// that every COMMITTED purchase has its parcel and every ROLLED_BACK one
// has none, that no prepared transaction is left, and that every zone adds
// up. The data directory keeps the other services' logs: a second run on
// the same directory and database recovers both.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/examples/pgshipping"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

func main() {
	store := flag.String("store", "", "the shipping service's PostgreSQL database (postgres://…)")
	dir := flag.String("data-dir", filepath.Join(os.TempDir(), "dtx-pgshipping-demo"), "data directory of the coordinator and the built-in services (kept: a second run recovers it)")
	worldPath := flag.String("world", "examples/world.json", "initial state of the built-in services (a new data directory)")
	input := flag.String("input", "examples/requests.jsonl", "JSON Lines file of purchase requests")
	conc := flag.Int("concurrency", 8, "purchases in flight at once (1 to 1024)")
	flag.Parse()
	if err := run(*store, *dir, *worldPath, *input, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "pgshipping-demo:", err)
		os.Exit(1)
	}
}

func run(store, dir, worldPath, input string, conc int) error {
	if store == "" {
		return fmt.Errorf("--store is required (a postgres:// URL)")
	}
	if conc < 1 || conc > 1024 {
		return fmt.Errorf("--concurrency %d is out of range (1 to 1024)", conc)
	}
	wb, err := os.ReadFile(worldPath)
	if err != nil {
		return err
	}
	world, err := purchase.ParseWorld(wb)
	if err != nil {
		return fmt.Errorf("%s: %w", worldPath, err)
	}
	f, err := os.Open(input)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := pgshipping.StartDemo(pgshipping.DemoConfig{DSN: store, DataDir: dir, World: world})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	outcomes := map[string]twopc.Outcome{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	rd := purchase.NewReader(f)
	for rd.Scan() {
		l := rd.Line()
		if l.Err != nil {
			fmt.Printf("line %d REJECTED %v\n", l.No, l.Err)
			continue
		}
		req := l.Req
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := d.Submit(ctx, &req)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				fmt.Printf("line %d REJECTED %v\n", l.No, err)
			default:
				dup := ""
				if o.Duplicate {
					dup = " (duplicate)"
				}
				if o.Committed {
					fmt.Printf("%s COMMITTED%s\n", o.Tx, dup)
				} else {
					fmt.Printf("%s ROLLED_BACK %s%s\n", o.Tx, o.Reason, dup)
				}
				outcomes[o.Tx] = o
			}
		}()
	}
	wg.Wait()
	if err := rd.Err(); err != nil {
		return err
	}
	if err := d.WaitQuiet(ctx); err != nil {
		return err
	}
	// Every decision is applied in the rows once the sweep has nothing
	// left: wait for that (bounded), then check.
	var st pgshipping.State
	for i := 0; ; i++ {
		res, err := d.Adapter.Sweep(ctx)
		if err == nil && res.Listed == 0 {
			break
		}
		if i == 100 {
			return fmt.Errorf("prepared transactions left in the database: %+v %v", res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err = pgshipping.ReadState(ctx, d.Adapter.Pool())
	if err != nil {
		return err
	}
	if err := st.Check(); err != nil {
		return err
	}
	orders, err := d.Orders(ctx)
	if err != nil {
		return err
	}
	var bad []string
	for tx, o := range outcomes {
		_, shipped := st.Shipped[tx]
		if o.Committed != shipped || o.Committed != orders[tx] {
			bad = append(bad, fmt.Sprintf("%s: committed=%v parcel=%v order=%v", tx, o.Committed, shipped, orders[tx]))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("atomicity violated: %v", bad)
	}
	var used []string
	for id, z := range st.Zones {
		if z.Shipped > 0 {
			used = append(used, fmt.Sprintf("%s:%d", id, z.Shipped))
		}
	}
	sort.Strings(used)
	fmt.Fprintf(os.Stderr, "shipping (PostgreSQL): %d parcels; parcels per zone %v\nevery COMMITTED purchase has its parcel and order, no ROLLED_BACK one has; nothing left prepared; adapter %+v\n",
		len(st.Shipped), used, d.Adapter.Stats())
	return nil
}
