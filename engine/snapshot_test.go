package engine

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/participant"
)

// TestEngineSnapshots: services snapshot and compact their logs while
// purchases run (with crashes); reopening gives back the same state from
// the newest snapshot and the log after it; with the newest snapshot of
// every service damaged, from the one before and a longer tail, the same
// state again; and every resubmission is still a duplicate.
func TestEngineSnapshots(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	dir := t.TempDir()
	w := hotWorld(16, 32)
	cfg := DefaultConfig(dir)
	cfg.World = &w
	cfg.PrepareTimeout = 300 * time.Millisecond
	cfg.LockTimeout = 100 * time.Millisecond
	cfg.CommitRetry = 10 * time.Millisecond
	cfg.SnapshotEvery = 20 * time.Millisecond
	cfg.SnapshotLogBytes = 16 << 10
	cfg.Faults = participant.Faults{FailRate: 0.05, CrashRate: 0.01, Downtime: 5 * time.Millisecond, Seed: seed}
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reqs := genRequests(rng, 1500, 16, 32)
	outs := submitAll(t, e, reqs, 32)
	st := settle(t, e)
	checkOutcomes(t, &st, outs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	snaps := func(svc string) []string {
		var out []string
		names, _ := os.ReadDir(filepath.Join(dir, svc))
		for _, n := range names {
			if strings.HasPrefix(n.Name(), "snap-") && strings.HasSuffix(n.Name(), ".snap") {
				out = append(out, n.Name())
			}
		}
		return out
	}
	for _, svc := range []string{"inventory", "payment", "order"} {
		if n := len(snaps(svc)); n < 1 || n > 2 {
			t.Fatalf("%s: %d snapshot files, want 1 or 2 (newest two kept)", svc, n)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, svc, "*.wal"))
		t.Logf("%s: snapshots %v, %d log segments", svc, snaps(svc), len(segs))
	}
	reopen := func(what string) {
		t.Helper()
		cfg.Faults = participant.Faults{}
		e2, err := Open(cfg)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer e2.Close()
		st2 := settle(t, e2)
		if !reflect.DeepEqual(st.Inventory, st2.Inventory) || !reflect.DeepEqual(st.Payment, st2.Payment) || !reflect.DeepEqual(st.Order, st2.Order) {
			t.Fatalf("%s: state differs from the state before", what)
		}
		for i, o := range submitAll(t, e2, reqs[:100], 16) {
			if !o.Duplicate {
				t.Fatalf("%s: %s was run again", what, reqs[i].TxID)
			}
		}
	}
	reopen("from the newest snapshots")
	// Damage the newest snapshot of every service that has two: recovery
	// must skip it for the older one (the log is kept from there).
	damaged := 0
	for _, svc := range []string{"inventory", "payment", "order"} {
		names := snaps(svc)
		if len(names) < 2 {
			continue
		}
		path := filepath.Join(dir, svc, names[len(names)-1])
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		damaged++
	}
	if damaged == 0 {
		t.Fatal("no service had two snapshots")
	}
	reopen("from the older snapshots")
}
