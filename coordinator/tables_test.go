package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// TestSnapshotTableFiles checks the outcome tables kept in files beside
// the snapshots, from outside: after several snapshots and rotations the
// directory holds exactly the table files the kept snapshots name (the
// others were removed), the last snapshot appended less than the tables
// hold (only what changed), and a restart answers every id as before.
// Damage to what a table file gained for the newest snapshot makes the
// restart fall back to the older snapshot with the same answers; damage
// to bytes both kept snapshots read makes it refuse to start, naming the
// damage, never answer from a wrong table.
func TestSnapshotTableFiles(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 5000 // a loaded machine's fake participant is slow
	mc.Retention = 300       // ticks of 1 ms
	lc := wal.DefaultConfig("")
	lc.SegmentSize = 8 << 10
	lc.PreallocSize = 4 << 10
	open := func() *coordinator.Coordinator { return openSnapshotting(ctx, t, dir, mc, lc, net) }
	c := open()
	var ids []string
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for i := 0; ; i++ {
		st := c.SnapshotStats()
		// Past two windows of 300 ms: an expired set is in the snapshots.
		if st.Taken >= 6 && st.KeptFrom > 1 && i >= 400 && time.Since(start) > 800*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d transactions and 20 s: %+v", i, st)
		}
		tx := fmt.Sprintf("t%d", i)
		if o, err := c.Submit(ctx, tx, []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil || !o.Committed {
			t.Fatalf("%s: %+v %v", tx, o, err)
		}
		ids = append(ids, tx)
		time.Sleep(time.Millisecond)
	}
	c.Close()
	ids = append(ids, "never-seen")
	answers := func(c *coordinator.Coordinator) map[string]coordinator.Known {
		t.Helper()
		m := map[string]coordinator.Known{}
		for _, tx := range ids {
			k, _, err := c.Lookup(ctx, tx)
			if err != nil {
				t.Fatal(err)
			}
			m[tx] = k
		}
		return m
	}
	refsOf := func(seq uint64) []twopc.TableRef {
		t.Helper()
		snap, err := wal.ReadSnapshot(wal.OSFS(), dir, seq)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := twopc.CoordinatorSnapshotTables(snap.Data)
		if err != nil {
			t.Fatal(err)
		}
		return refs
	}
	seqs := wal.SnapshotSeqs(wal.OSFS(), dir)
	if len(seqs) != 2 {
		t.Fatalf("snapshots kept: %v, want 2", seqs)
	}
	older, newest := seqs[0], seqs[1]
	named := map[string]bool{}
	for _, r := range refsOf(newest) {
		named[r.File] = true
	}
	for _, r := range refsOf(older) {
		named[r.File] = true
	}
	files, _ := filepath.Glob(filepath.Join(dir, node.TablePrefix+"*"))
	var onDisk []string
	for _, f := range files {
		onDisk = append(onDisk, filepath.Base(f))
	}
	if len(named) == 0 || len(onDisk) != len(named) {
		t.Fatalf("table files on disk %v, named by the kept snapshots %v", onDisk, named)
	}
	for _, f := range onDisk {
		if !named[f] {
			t.Fatalf("table file %s is named by no kept snapshot (%v)", f, named)
		}
	}
	c = open()
	want := answers(c)
	st := c.SnapshotStats()
	c.Close()
	if st.Loaded != newest || len(st.Skipped) != 0 || st.LoadedOutcomes == 0 {
		t.Fatalf("restart: %+v, want snapshot %d loaded with its outcomes", st, newest)
	}
	kinds := map[coordinator.Known]int{}
	for _, k := range want {
		kinds[k]++
	}
	if kinds[coordinator.KnownDecided] == 0 {
		t.Fatalf("answers after the restart cover too little: %v", kinds)
	}
	t.Logf("answers after the restart (1 unknown, 3 decided, 4 expired): %v", kinds)
	if s := wal.SnapshotSeqs(wal.OSFS(), dir); !slices.Equal(s, seqs) {
		t.Fatalf("the restarts took a snapshot (%v, was %v): the checks below need the same two", s, seqs)
	}

	// Damage past what the older snapshot covers of a file the newest
	// one extended (or made).
	covered := map[string]int64{}
	for _, r := range refsOf(older) {
		covered[r.File] = r.Len
	}
	var hit twopc.TableRef
	for _, r := range refsOf(newest) {
		if r.Len > max(covered[r.File], ledger.HeaderLen) {
			hit = r
			break
		}
	}
	if hit.File == "" {
		t.Fatal("the newest snapshot added nothing to any table file")
	}
	flip := func(name string, at int64) {
		t.Helper()
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[at] ^= 0x20
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	from := max(covered[hit.File], ledger.HeaderLen)
	flip(hit.File, from+(hit.Len-from)/2)
	c = open()
	got := answers(c)
	st = c.SnapshotStats()
	c.Close()
	if st.Loaded != older || len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0], hit.File) {
		t.Fatalf("with %s damaged past the older snapshot: %+v, want snapshot %d loaded and the newest skipped naming the file", hit.File, st, older)
	}
	for _, tx := range ids {
		if got[tx] != want[tx] {
			t.Fatalf("from the older snapshot %s is %v, from the newest %v", tx, got[tx], want[tx])
		}
	}

	// Damage to what both read: refused.
	var shared twopc.TableRef
	for _, r := range refsOf(older) {
		if r.Len > ledger.HeaderLen {
			shared = r
			break
		}
	}
	flip(shared.File, ledger.HeaderLen+(shared.Len-ledger.HeaderLen)/2)
	_, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open with a table file both snapshots read damaged: %v, want a refusal naming the damage", err)
	}
}

// snapshotNow is Coordinator.SnapshotNow, retried while the loop is busy.
func snapshotNow(ctx context.Context, c *coordinator.Coordinator) error {
	for {
		err := c.SnapshotNow(ctx)
		if !errors.Is(err, node.ErrBusy) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSnapshotTablesOnlyChanges: with a table that only grows (no
// rotation), a snapshot taken after a few more transactions appends
// those few to the table file, not the table again.
func TestSnapshotTablesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 5000
	mc.Retention = 0 // every outcome kept: one table, growing
	c, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net,
		Log: wal.DefaultConfig(""), Snapshot: coordinator.SnapshotConfig{LogBytes: 1 << 30, Check: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	defer c.Close()
	submit := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			tx := fmt.Sprintf("%s%d", prefix, i)
			if _, err := c.Submit(ctx, tx, []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil {
				t.Fatalf("%s: %v", tx, err)
			}
		}
		time.Sleep(50 * time.Millisecond) // the ACKs: an outcome is filed at END
	}
	submit("a", 400)
	if err := snapshotNow(ctx, c); err != nil {
		t.Fatal(err)
	}
	first := c.SnapshotStats()
	submit("b", 10)
	if err := snapshotNow(ctx, c); err != nil {
		t.Fatal(err)
	}
	second := c.SnapshotStats()
	if first.LastTableBytes < 400*5 { // ids of 2 to 4 bytes and a 3-byte header each
		t.Fatalf("the first snapshot appended %d bytes for 400 outcomes", first.LastTableBytes)
	}
	if second.LastTableBytes <= 0 || 4*second.LastTableBytes > first.LastTableBytes {
		t.Fatalf("after 10 more outcomes the snapshot appended %d bytes (the first, of 400: %d): want about the 10", second.LastTableBytes, first.LastTableBytes)
	}
}
