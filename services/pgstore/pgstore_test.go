package pgstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/internal/pgtest"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	os.Exit(code)
}

func exampleRequests(t *testing.T) []purchase.Line {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "examples", "requests.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []purchase.Line
	for rd := purchase.NewReader(f); rd.Scan(); {
		out = append(out, rd.Line())
	}
	return out
}

func runAll(t *testing.T, e *engine.Engine, reqs []purchase.Request, conc int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	for i := range reqs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := e.Submit(ctx, &reqs[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// The example requests one at a time with no faults give the same
// outcomes and the same state JSON with the services on PostgreSQL as
// with the services on their logs.
func TestSameStateAsLogs(t *testing.T) {
	dsn := pgtest.NewDB(t)
	var reqs []purchase.Request
	for _, l := range exampleRequests(t) {
		if l.Err == nil {
			reqs = append(reqs, l.Req)
		}
	}
	var states [2][]byte
	for i, store := range []string{"", dsn} {
		cfg := engine.DefaultConfig(t.TempDir())
		cfg.Store = store
		cfg.Today = time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
		e, err := engine.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		runAll(t, e, reqs, 1)
		ctx := context.Background()
		if err := e.WaitQuiet(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Check(ctx); err != nil {
			t.Fatalf("store %q: %v", store, err)
		}
		st, err := e.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Coordinator = engine.CoordStatus{}
		states[i], _ = json.MarshalIndent(st, "", " ")
		e.Close()
	}
	if !bytes.Equal(states[0], states[1]) {
		t.Fatalf("state differs:\nlogs:\n%s\npostgres:\n%s", states[0], states[1])
	}
}

// Concurrent purchases (with multi-item orders that deadlock inside the
// inventory), simulated business failures and crashes of the services,
// then a restart: atomicity across the three tables, the invariants, and
// nothing left prepared or in doubt.
func TestFaultsAndRestart(t *testing.T) {
	seed := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("DTX_PG_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (replay with DTX_PG_SEED=%d)", seed, seed)
	dsn := pgtest.NewDB(t)
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range 6 {
		w.Items[fmt.Sprintf("item-%d", i)] = purchase.Item{Stock: 300}
	}
	for i := range 6 {
		w.Accounts[fmt.Sprintf("user-%d", i)] = purchase.Account{Balance: 50_000_00}
	}
	n := 300
	if testing.Short() {
		n = 100
	}
	opts := purchase.MixedGenOptions()
	opts.MultiItem = 0.3
	var buf bytes.Buffer
	if err := purchase.GenerateRequests(&buf, n, seed, w, opts); err != nil {
		t.Fatal(err)
	}
	var reqs []purchase.Request
	for rd := purchase.NewReader(&buf); rd.Scan(); {
		if l := rd.Line(); l.Err == nil {
			reqs = append(reqs, l.Req)
		}
	}
	dir := t.TempDir()
	cfg := engine.DefaultConfig(dir)
	cfg.Store = dsn
	cfg.World = &w
	cfg.Faults = participant.Faults{FailRate: 0.02, CrashRate: 0.01, Seed: uint64(seed)}
	e, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, e, reqs, 16)
	e.Close()
	cfg.Faults = participant.Faults{}
	e, err = engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.WaitQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	// Decisions whose statement failed are applied by the sweep: wait
	// until nothing of dtx is prepared in the database.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for {
		var left int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'dtx1.%'").Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("seed %d: %d prepared transactions left", seed, left)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := e.Check(ctx); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	st, err := e.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.InDoubt) > 0 || len(st.Order.Orders) == 0 {
		t.Fatalf("seed %d: in doubt %v, %d orders", seed, st.InDoubt, len(st.Order.Orders))
	}
	// Every resubmission gets the first outcome, and it matches the rows.
	for i := range reqs {
		o, err := e.Submit(ctx, &reqs[i])
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.Order.Orders[o.Tx]; ok != o.Committed {
			t.Fatalf("seed %d: %s committed=%v but order row %v", seed, o.Tx, o.Committed, ok)
		}
	}
	t.Logf("%d requests, %d orders committed", len(reqs), len(st.Order.Orders))
}

// A data directory made with a store must be opened with one, and one
// made without cannot move to one.
func TestStoreMarker(t *testing.T) {
	dsn := pgtest.NewDB(t)
	dir := t.TempDir()
	cfg := engine.DefaultConfig(dir)
	cfg.Store = dsn
	e, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	cfg.Store = ""
	if _, err := engine.Open(cfg); err == nil {
		t.Fatal("opened a PostgreSQL data directory without its store")
	}
	cfg = engine.DefaultConfig(t.TempDir())
	e, err = engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	cfg.Store = dsn
	if _, err := engine.Open(cfg); err == nil {
		t.Fatal("moved a log data directory to a store")
	}
	cfg = engine.DefaultConfig(t.TempDir())
	cfg.Store = "mysql://x"
	if _, err := engine.Open(cfg); err == nil {
		t.Fatal("accepted a non-postgres store")
	}
}
