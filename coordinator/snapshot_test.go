package coordinator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// TestSnapshotRestart runs a coordinator across several rotations of a
// short retention window with small log segments and snapshots every few
// KiB of log, then checks from outside what the snapshots are for: they were
// written, the log was compacted after them (its first record is no
// longer the first ever), at most two snapshot files are kept, and a
// restart loads the newest and answers every id as before (committed,
// expired or unknown). With the newest snapshot damaged it falls back to
// the older one and still answers alike; with both damaged it refuses to
// start, naming the damage, instead of replaying a log that no longer
// holds what they stood for.
func TestSnapshotRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	mc.Retention = 150 // ticks of 1 ms
	lc := wal.DefaultConfig("")
	lc.SegmentSize = 8 << 10
	lc.PreallocSize = 4 << 10
	open := func() *coordinator.Coordinator { return openSnapshotting(ctx, t, dir, mc, lc, net) }
	c := open()
	var ids []string
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		st := c.SnapshotStats()
		if st.Taken >= 4 && st.KeptFrom > 1 && i >= 300 && c.Log().FirstSeq() > 1 {
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
	if first := c.Log().FirstSeq(); first <= 1 {
		t.Fatalf("the log still starts at record %d after %+v", first, c.SnapshotStats())
	}
	c.Close()
	snaps, _ := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	if len(snaps) != 2 {
		t.Fatalf("%d snapshot files kept, want 2: %v", len(snaps), snaps)
	}

	// What the coordinator answers right after a restart (its window
	// starts again at the restart: nothing rotates within the checks).
	c = open()
	want := answers(c)
	if st := c.SnapshotStats(); st.Loaded == 0 || len(st.Skipped) != 0 {
		t.Fatalf("restart: %+v, want the newest snapshot loaded", st)
	}
	kinds := map[coordinator.Known]int{}
	for _, k := range want {
		kinds[k]++
	}
	if kinds[coordinator.KnownDecided] == 0 || kinds[coordinator.KnownExpired] == 0 || kinds[coordinator.KnownUnknown] < 2 {
		t.Fatalf("answers after the restart cover too little: %v", kinds)
	}
	c.Close()

	// The newest snapshot damaged: the older one and a longer replay give
	// the same answers.
	flip := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x10
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snaps, _ = filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	flip(snaps[len(snaps)-1])
	c = open()
	got := answers(c)
	st := c.SnapshotStats()
	c.Close()
	if len(st.Skipped) != 1 || st.Loaded == 0 {
		t.Fatalf("with the newest snapshot damaged: %+v, want the older one loaded", st)
	}
	for _, tx := range ids {
		if got[tx] != want[tx] {
			t.Fatalf("from the older snapshot %s is %v, from the newest %v", tx, got[tx], want[tx])
		}
	}

	// Both damaged: the log was compacted up to the older one's head, so
	// a replay from scratch would be wrong. Open must refuse.
	snaps, _ = filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	for _, p := range snaps {
		if err := os.Truncate(p, 40); err != nil { // torn
			t.Fatal(err)
		}
	}
	_, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open with every snapshot damaged: %v, want an error naming the damage", err)
	}
	// Removed (by an operator after that error, say): still refused.
	for _, p := range snaps {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	_, err = coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc})
	if err == nil || !strings.Contains(err.Error(), "no snapshot can be loaded") {
		t.Fatalf("Open of a compacted log with its snapshots removed: %v, want a refusal", err)
	}
}

// TestSnapshotDamagedWholeLog: snapshot files all damaged but a log never
// compacted (its segments are larger than what was logged) is replayed
// whole: the coordinator starts and knows every outcome.
func TestSnapshotDamagedWholeLog(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	cfg := coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: wal.DefaultConfig(""),
		Snapshot: coordinator.SnapshotConfig{LogBytes: 2 << 10, Check: 5 * time.Millisecond}}
	c, err := coordinator.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; c.SnapshotStats().Taken < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no three snapshots: %+v", c.SnapshotStats())
		}
		if _, err := c.Submit(ctx, fmt.Sprintf("t%d", i), []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	if first := c.Log().FirstSeq(); first != 1 {
		t.Fatalf("the log starts at %d: compacted, the test needs it whole", first)
	}
	c.Close()
	snaps, _ := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	if len(snaps) < 2 {
		t.Fatalf("%d snapshot files", len(snaps))
	}
	for _, p := range snaps {
		if err := os.Truncate(p, 40); err != nil {
			t.Fatal(err)
		}
	}
	c, err = coordinator.Open(cfg)
	if err != nil {
		t.Fatalf("a whole log with damaged snapshots: %v", err)
	}
	go c.Run(ctx)
	defer c.Close()
	if k, o, err := c.Lookup(ctx, "t0"); err != nil || k != coordinator.KnownDecided || !o.Committed {
		t.Fatalf("t0 after replaying the whole log: %v %+v %v", k, o, err)
	}
}

// TestSnapshotOutlivesCheckpoints: a coordinator on its own log leaves
// the compaction to its snapshots. Here one snapshot is taken and then
// many rotations pass without another: compacting at the third newest
// checkpoint, as a replicated coordinator's log is, would remove the
// records right after that snapshot, and the restart from it would find
// them missing.
func TestSnapshotOutlivesCheckpoints(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	mc.Retention = 10 // ticks of 1 ms: a rotation every 10 ms
	lc := wal.DefaultConfig("")
	lc.SegmentSize = 8 << 10
	lc.PreallocSize = 4 << 10
	cfg := coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot: coordinator.SnapshotConfig{Every: time.Hour, LogBytes: 1 << 40}}
	c, err := coordinator.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	submit := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := c.Submit(ctx, fmt.Sprintf("t%d", i), []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	submit(0, 50)
	if err := snapshotNow(ctx, c); err != nil {
		t.Fatal(err)
	}
	// Many rotations and segments later, still no other snapshot.
	deadline := time.Now().Add(200 * time.Millisecond)
	for i := 50; time.Now().Before(deadline); i += 20 {
		submit(i, i+20)
	}
	if st := c.SnapshotStats(); st.Taken != 1 {
		t.Fatalf("%d snapshots, want the one", st.Taken)
	}
	c.Close()
	c, err = coordinator.Open(cfg)
	if err != nil {
		t.Fatalf("restart from the one snapshot: %v", err)
	}
	if st := c.SnapshotStats(); st.Loaded == 0 {
		t.Fatalf("the snapshot was not loaded: %+v", st)
	}
	c.Close()
}

// openSnapshotting opens and runs the coordinator of dir, snapshotting
// every 6 KiB of log.
func openSnapshotting(ctx context.Context, t *testing.T, dir string, mc twopc.CoordinatorConfig, lc wal.Config, net transport.Network) *coordinator.Coordinator {
	t.Helper()
	c, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot: coordinator.SnapshotConfig{LogBytes: 6 << 10, Check: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	return c
}
