package replica

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// statesOf answers every id of out from m: its state, EXPIRED, or absent.
func statesOf(m *twopc.Coordinator, out *outcomes) map[string]string {
	out.mu.Lock()
	ids := slices.Collect(maps.Keys(out.got))
	out.mu.Unlock()
	st := map[string]string{}
	for _, id := range ids {
		if s, ok := m.State(id); ok {
			st[id] = s.String()
		} else if m.Expired(id) {
			st[id] = "EXPIRED"
		}
	}
	return st
}

func (g *group) raftDir(id uint64) string {
	return filepath.Join(g.dir, "raft"+strconv.FormatUint(id, 10))
}

// TestSnapshotCatchUpAndFailover: a follower down while the others
// snapshot and compact their raft logs past its last entry comes back,
// fetches the leader's snapshot file (it cannot get the entries), and
// then leads: its machine, restored from the fetched state and the
// entries after it, knows the outcome of every transaction finished while
// it was down, and the services stay atomic. Every replica's raft log was
// compacted, and a restart of each loads a snapshot file.
func TestSnapshotCatchUpAndFailover(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	// Every outcome stays known while the test runs (it asks about all
	// of them at the end: with the group tests' short window the first
	// ones expired on a slow machine, and were answered "expired").
	p := testProtocol()
	p.DedupWindow = time.Hour
	g := newGroupProto(t, seed, 3, p)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithCancel(ctx)
	wg := g.load(lctx, 8, out)
	waitCommits(ctx, t, out, 30)
	lead, _ := g.leader(ctx)
	down := lead%3 + 1 // a follower
	g.kill(down)
	downRep, err := New(g.cfgOf(down))
	if err != nil {
		t.Fatal(err)
	}
	downLast := downRep.lastIndex()
	downRep.Close()
	// Load until every replica up has compacted past down's last entry.
	for {
		waitCommits(ctx, t, out, 20)
		past := true
		for _, r := range g.replicas() {
			past = past && r.Status().Compacted > downLast
		}
		if past {
			break
		}
	}
	g.start(down)
	var rep *Replica
	for _, r := range g.replicas() {
		if r.cfg.ID == down {
			rep = r
		}
	}
	for rep.SnapshotStats().Installed == 0 {
		if ctx.Err() != nil {
			t.Fatalf("seed %d: replica %d never installed a snapshot: %+v, %+v", seed, down, rep.Status(), rep.SnapshotStats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitCommits(ctx, t, out, 30)
	// Hand it the leadership.
	for {
		id, r := g.leader(ctx)
		if id == down {
			break
		}
		_ = r.TransferLeadership(ctx, down)
		time.Sleep(50 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("seed %d: replica %d never took the leadership", seed, down)
		}
	}
	waitCommits(ctx, t, out, 30)
	stop()
	wg.Wait()
	g.quiesce(ctx)
	g.check(ctx, out)
	// Its coordinator answers every finished transaction as the clients
	// were told (a lookup after ReadIndex).
	out.mu.Lock()
	got := maps.Clone(out.got)
	out.mu.Unlock()
	for id, os := range got {
		k, o, err := rep.Lookup(ctx, id)
		if err != nil {
			t.Fatalf("seed %d: lookup %s on the new leader: %v", seed, id, err)
		}
		if k != coordinator.KnownDecided || o.Committed != os[0].Committed {
			t.Fatalf("seed %d: new leader answers %s with %v %+v, the client was told %+v", seed, id, k, o, os[0])
		}
	}
	// Every replica compacted, and each one's restart loads a file and
	// rebuilds the state of a whole replay of the others'.
	for _, r := range g.replicas() {
		if st := r.Status(); st.Compacted == 0 {
			t.Errorf("seed %d: replica %d never compacted: %+v", seed, r.cfg.ID, st)
		}
	}
	t.Logf("seed %d: %d transactions; replica %d: %+v", seed, len(got), down, rep.SnapshotStats())
}

// TestSnapshotRestartFallsBack: a replica's restart loads its newest
// snapshot file; with that one damaged, the older one, with the same
// state in the end (more entries are applied after it); with both
// damaged, its compacted raft log is refused rather than replayed into a
// shorter history.
func TestSnapshotRestartFallsBack(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	g := newGroup(t, seed, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithCancel(ctx)
	wg := g.load(lctx, 8, out)
	for {
		waitCommits(ctx, t, out, 20)
		r := g.replicas()[0]
		if r.Status().Compacted > 0 && len(wal.SnapshotSeqs(wal.OSFS(), g.raftDir(r.cfg.ID))) == 2 {
			break
		}
	}
	stop()
	wg.Wait()
	g.quiesce(ctx)
	id := g.replicas()[0].cfg.ID
	g.kill(id)
	dir := g.raftDir(id)
	files := wal.SnapshotSeqs(wal.OSFS(), dir)
	if len(files) != 2 {
		t.Fatalf("seed %d: replica %d keeps snapshot files %v, want two", seed, id, files)
	}
	lc := g.cfgOf(id)
	replay := func() (map[string]string, uint64, error) {
		m, _, err := ReplayCommitted(lc.Log, g.ids, lc.Coordinator.Machine)
		if err != nil {
			return nil, 0, err
		}
		r, err := New(lc)
		if err != nil {
			return nil, 0, err
		}
		loaded := r.SnapshotStats().Loaded
		r.Close()
		return statesOf(m, out), loaded, nil
	}
	whole, loaded, err := replay()
	if err != nil {
		t.Fatal(err)
	}
	if loaded != files[1] {
		t.Fatalf("seed %d: restart loaded the file at %d, want the newest at %d", seed, loaded, files[1])
	}
	// A file past the durable commit index (a fetched one whose install
	// a crash cut off) is not this log's state: the restart skips it.
	past := files[1] + 1000
	if err := wal.WriteSnapshot(wal.OSFS(), dir, past, snapData(t, dir, files[1]), nil); err != nil {
		t.Fatal(err)
	}
	if _, loaded, err := replay(); err != nil || loaded != files[1] {
		t.Fatalf("seed %d: with a file at %d past the commit index: loaded %d, %v; want the file at %d", seed, past, loaded, err, files[1])
	}
	if err := os.Remove(filepath.Join(dir, wal.SnapshotName(past))); err != nil {
		t.Fatal(err)
	}
	damage := func(i uint64) {
		path := filepath.Join(dir, wal.SnapshotName(i))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	damage(files[1])
	older, loaded, err := replay()
	if err != nil {
		t.Fatalf("seed %d: with the newest file damaged: %v", seed, err)
	}
	if loaded != files[0] {
		t.Fatalf("seed %d: with the newest damaged, restart loaded %d, want the older at %d", seed, loaded, files[0])
	}
	if fmt.Sprint(older) != fmt.Sprint(whole) {
		t.Fatalf("seed %d: from the older file the state differs:\n%v\n%v", seed, older, whole)
	}
	damage(files[0])
	if _, _, err := replay(); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("seed %d: both files damaged over a compacted log: %v, want a refusal", seed, err)
	}
}

func snapData(t *testing.T, dir string, i uint64) []byte {
	t.Helper()
	s, err := wal.ReadSnapshot(wal.OSFS(), dir, i)
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// TestNetFetchSnapshot fetches a snapshot of several chunks over gRPC
// (the Raft/Snapshot call) and gets an error for an index not kept.
func TestNetFetchSnapshot(t *testing.T) {
	dir := t.TempDir()
	lc := wal.DefaultConfig(dir)
	lc.PreallocSize = 0
	r, err := New(Config{ID: 1, Peers: []uint64{1, 2}, Log: lc, Transport: NewMemTransport(),
		Coordinator: coordinatorConfig(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 1, RetryBase: 1, RetryMax: 1}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	// Bytes of three chunks, written after the replica opened (a file
	// past its empty raft log would be refused at open): only moved here.
	data := make([]byte, 5*snapshotChunk/2)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := wal.WriteSnapshot(wal.OSFS(), dir, 42, data, nil); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	serving, err := NewNet(1, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	serving.SetReplica(r)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dtxv1.RegisterRaftServer(srv, serving.Server())
	go srv.Serve(lis)
	defer srv.Stop()
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	fetching, err := NewNet(2, map[uint64]string{1: lis.Addr().String()}, dial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fetching.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := fetching.FetchSnapshot(ctx, 1, 42)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatalf("fetched %d bytes, want the %d of the file", len(got), len(data))
	}
	if _, err := fetching.FetchSnapshot(ctx, 1, 43); err == nil {
		t.Fatal("fetched a snapshot the replica does not keep")
	}
}
