package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// TestSnapshotNowCloseNoDeadlock: SnapshotNow called from outside (with a
// context that never ends) while the snapshotter is always due and Close
// comes: Close returns. (A SnapshotNow that held the snapshot lock while
// waiting for a loop that had stopped kept the snapshotter, and so Run and
// Close, waiting forever.)
func TestSnapshotNowCloseNoDeadlock(t *testing.T) {
	for round := range 30 {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		net := transport.NewMemNetwork(transport.Faults{}, 1)
		fakeParticipant(ctx, net, "p1")
		mc := twopc.DefaultCoordinatorConfig()
		c, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: wal.DefaultConfig(""),
			Snapshot: coordinator.SnapshotConfig{LogBytes: 1, Check: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		go c.Run(ctx)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // keep logging so that the snapshotter is always due
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Submit(ctx, fmt.Sprintf("r%d-%d", round, i), []twopc.Branch{{Node: "p1", Op: []byte("x")}})
			}
		}()
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := c.SnapshotNow(context.Background()); errors.Is(err, coordinator.ErrClosed) || errors.Is(err, node.ErrStopped) {
						return
					}
				}
			}()
		}
		time.Sleep(30 * time.Millisecond)
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "coordinator.(*Coordinator)") {
					t.Log(g)
				}
			}
			t.Fatalf("round %d: Close hangs (snapshotter blocked on snapRun held by a SnapshotNow waiting for a loop that has stopped)", round)
		}
		close(stop)
		wg.Wait()
		cancel()
	}
}

// TestSnapshotMarkerOnlyOnceCompacted: a data directory whose log was
// compacted at checkpoints (before coordinators took snapshots; no marker)
// starts taking snapshots, and the first one is cut before its rename (a
// crash). A restart still recovers from that log: the marker that makes a
// restart refuse a compacted log without a snapshot is written only just
// before the log is first compacted after a snapshot.
func TestSnapshotMarkerOnlyOnceCompacted(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	mc.Retention = 20
	lc := wal.DefaultConfig("")
	lc.SegmentSize = 8 << 10
	lc.PreallocSize = 4 << 10
	lc.Dir = dir
	// 1. The old rule: no snapshots; compact at the third newest checkpoint.
	c, err := coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot: coordinator.SnapshotConfig{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	for i := range 600 {
		if _, err := c.Submit(ctx, fmt.Sprintf("t%d", i), []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.Close()
	m, err := twopc.NewCoordinator(mc)
	if err != nil {
		t.Fatal(err)
	}
	// Compact it as the carrier did before snapshots: up to the third
	// newest checkpoint.
	log, ckpts, err := node.RecoverCheckpoints(lc, m, node.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ckpts) == 0 {
		t.Fatalf("no checkpoints")
	}
	if err := log.Compact(ckpts[0]); err != nil {
		t.Fatal(err)
	}
	first := log.FirstSeq()
	log.Close()
	if first <= 1 {
		t.Fatalf("not compacted (checkpoints %v)", ckpts)
	}
	// Such a directory opens (no marker).
	c, err = coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot: coordinator.SnapshotConfig{Off: true}})
	if err != nil {
		t.Fatalf("checkpoint-compacted log: %v", err)
	}
	c.Close()
	// 2. The new version: the first snapshot is cut after its temp file is
	// written (a crash before the rename).
	crash := errors.New("crash")
	c, err = coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot:      coordinator.SnapshotConfig{Every: time.Hour},
		SnapshotHooks: node.SnapshotHooks{Step: func(s wal.SnapshotStep) error { return crash }}})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	for {
		err := c.SnapshotNow(ctx)
		if errors.Is(err, coordinator.ErrClosed) || errors.Is(err, node.ErrBusy) {
			time.Sleep(time.Millisecond)
			continue
		}
		if !errors.Is(err, crash) {
			t.Fatalf("SnapshotNow: %v", err)
		}
		break
	}
	c.Close()
	// 3. Restart: nothing was compacted after a snapshot.
	c, err = coordinator.Open(coordinator.Config{Dir: dir, Machine: mc, Tick: time.Millisecond, Network: net, Log: lc,
		Snapshot: coordinator.SnapshotConfig{Off: true}})
	if err != nil {
		if strings.Contains(err.Error(), "no snapshot can be loaded") {
			t.Fatalf("a recoverable checkpoint-compacted log refused after a crash during the first snapshot: %v", err)
		}
		t.Fatal(err)
	}
	c.Close()
}
