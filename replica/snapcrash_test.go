package replica

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// TestSnapshotCrashBeforeCompact: the power goes after a snapshot's
// write and before the compaction up to the older file is durable (the
// BeforeCompact crash point). The file at the raft log's snapshot index
// must still be there: as leader, the replica sends that index to a
// replica behind its compacted log, which fetches that file. (The writer
// used to prune it before the compaction; then no file held the index and,
// with no snapshot due in an idle group, the replica behind never caught
// up.) Then the file is removed, as damage would: the restart moves the
// raft log's snapshot to the file it loaded, and the replica behind
// catches up all the same.
func TestSnapshotCrashBeforeCompact(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	g := newGroup(t, seed, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithCancel(ctx)
	wg := g.load(lctx, 8, out)
	waitCommits(ctx, t, out, 30)
	const x, y = 1, 2
	// y goes down early: it will be behind every compaction after this.
	g.kill(y)
	yRep, err := New(g.cfgOf(y))
	if err != nil {
		t.Fatal(err)
	}
	yLast := yRep.lastIndex()
	yRep.Close()
	// x restarts with a hook that cuts the power at the crash point once
	// its raft snapshot is past y's log.
	g.kill(x)
	crashDir := t.TempDir()
	crashed := make(chan uint64, 1)
	var once sync.Once
	var last uint64 // the raft log's snapshot: the previous compaction's point (the hook runs on x's raft loop)
	g.startWith(x, func(c *Config) {
		c.SnapshotHooks.BeforeCompact = func(older uint64) {
			at := last
			last = older
			if at <= yLast {
				return
			}
			once.Do(func() {
				// The power goes now: nothing x does after this reaches
				// anyone, and its disk is what it is at this moment.
				g.rt.Isolate(x, true)
				if out, err := exec.Command("cp", "-a", g.raftDir(x)+"/.", crashDir).CombinedOutput(); err != nil {
					t.Errorf("copy: %v %s", err, out)
				}
				crashed <- at
			})
		}
	})
	var si uint64
	select {
	case si = <-crashed:
	case <-ctx.Done():
		t.Fatalf("seed %d: x never reached the crash point", seed)
	}
	g.kill(x)
	stop() // the transactions in flight finish once x is back
	if err := os.RemoveAll(g.raftDir(x)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(crashDir, g.raftDir(x)); err != nil {
		t.Fatal(err)
	}
	t.Logf("crash with raft snapshot at %d; files on disk %v; y's log ends at %d", si, wal.SnapshotSeqs(wal.OSFS(), g.raftDir(x)), yLast)
	if err := wal.CheckSnapshot(wal.OSFS(), g.raftDir(x), si); err != nil {
		t.Fatalf("seed %d: the crash left the raft log's snapshot at %d without its file: %v", seed, si, err)
	}
	if err := os.Remove(filepath.Join(g.raftDir(x), wal.SnapshotName(si))); err != nil {
		t.Fatal(err)
	}
	// x restarts (only a size trigger: an idle group snapshots no more).
	xr := g.startWith(x, func(c *Config) {
		c.Coordinator.Snapshot = coordinator.SnapshotConfig{LogBytes: 16 << 10}
	})
	wg.Wait()
	for {
		id, r := g.leader(ctx)
		if id == x {
			break
		}
		_ = r.TransferLeadership(ctx, x)
		time.Sleep(50 * time.Millisecond)
	}
	g.start(y)
	var yr *Replica
	for _, r := range g.replicas() {
		if r.cfg.ID == y {
			yr = r
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if yr.SnapshotStats().Installed > 0 {
			t.Logf("y installed a snapshot: %+v", yr.SnapshotStats())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("seed %d: leader %d (raft snapshot %d, file missing: %v, status %+v) never let replica %d catch up in 5 s: %+v, status %+v",
		seed, x, xr.Status().Compacted, wal.CheckSnapshot(wal.OSFS(), g.raftDir(x), xr.Status().Compacted), xr.Status(), y, yr.SnapshotStats(), yr.Status())
}
