package pgshipping

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/pgtest"
	"github.com/dtx-dev/dtx/purchase"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	os.Exit(code)
}

// The example requests across the four services, then a restart on the
// same data directory and database: every committed purchase has its
// parcel row and its order, every rolled back one neither, zones add up,
// duplicates get their first outcome after the restart.
func TestDemo(t *testing.T) {
	dsn := pgtest.NewDB(t)
	wb, err := os.ReadFile(filepath.Join("..", "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	world, err := purchase.ParseWorld(wb)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("..", "requests.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var reqs []purchase.Request
	for rd := purchase.NewReader(f); rd.Scan(); {
		if l := rd.Line(); l.Err == nil {
			reqs = append(reqs, l.Req)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := map[string]bool{}
	for round := range 2 {
		d, err := StartDemo(DemoConfig{DSN: dsn, DataDir: dir, World: world, Zones: 4, Capacity: 100})
		if err != nil {
			t.Fatal(err)
		}
		for i := range reqs {
			o, err := d.Submit(ctx, &reqs[i])
			if err != nil {
				t.Fatal(err)
			}
			if round == 0 && !o.Duplicate {
				first[o.Tx] = o.Committed
			} else if o.Committed != first[o.Tx] {
				t.Fatalf("round %d: %s committed=%v, first outcome %v", round, o.Tx, o.Committed, first[o.Tx])
			}
		}
		if err := d.WaitQuiet(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := ReadState(ctx, d.Adapter.Pool())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Check(); err != nil {
			t.Fatal(err)
		}
		orders, err := d.Orders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for tx, c := range first {
			if _, shipped := st.Shipped[tx]; shipped != c || orders[tx] != c {
				t.Fatalf("%s: committed=%v parcel=%v order=%v", tx, c, shipped, orders[tx])
			}
			if c {
				n++
			}
		}
		if n == 0 || n == len(first) {
			t.Fatalf("%d of %d committed", n, len(first))
		}
		d.Close()
	}
}
