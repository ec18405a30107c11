package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// group is a coordinator group of replicas with the three built-in
// services, all in this process: the replicas' raft messages go over a
// MemTransport, the protocol's over one transport.MemNetwork, on which
// only the leader's coordinator is registered.
type group struct {
	t     *testing.T
	seed  uint64
	dir   string
	proto deploy.Protocol
	net   *transport.MemNetwork
	rt    *MemTransport
	world purchase.World
	svcs  map[string]*participant.Service
	ids   []uint64

	mu      sync.Mutex
	reps    map[uint64]*Replica
	cancels map[uint64]context.CancelFunc
	sent    []sentMsg // protocol messages, by replica, when tapped
	tap     atomic.Bool
	wg      sync.WaitGroup
}

type sentMsg struct {
	from uint64
	at   time.Time
	m    twopc.Message
}

// tapNet is a replica's view of the protocol network: it records what the
// replica's coordinator sends.
type tapNet struct {
	transport.Network
	g  *group
	id uint64
}

func (n tapNet) Send(msgs []twopc.Message) {
	if n.g.tap.Load() {
		now := time.Now()
		n.g.mu.Lock()
		for _, m := range msgs {
			n.g.sent = append(n.g.sent, sentMsg{from: n.id, at: now, m: m})
		}
		n.g.mu.Unlock()
	}
	n.Network.Send(msgs)
}

func testProtocol() deploy.Protocol {
	p := deploy.DefaultProtocol()
	p.PrepareTimeout = 300 * time.Millisecond
	p.CommitRetry = 20 * time.Millisecond
	p.LockTimeout = 100 * time.Millisecond
	// Short generations, so that checkpoints are logged and the raft logs
	// compacted while the test runs.
	p.DedupWindow = 400 * time.Millisecond
	p.SnapshotEvery = 0
	p.SnapshotLogBytes = 0
	return p
}

func newGroup(t *testing.T, seed uint64, n int) *group {
	return newGroupProto(t, seed, n, testProtocol())
}

func newGroupProto(t *testing.T, seed uint64, n int, proto deploy.Protocol) *group {
	t.Helper()
	g := &group{
		t: t, seed: seed, dir: t.TempDir(), proto: proto,
		net:  transport.NewMemNetwork(transport.Faults{}, seed),
		rt:   NewMemTransport(),
		svcs: map[string]*participant.Service{}, reps: map[uint64]*Replica{}, cancels: map[uint64]context.CancelFunc{},
	}
	g.world = purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range 8 {
		g.world.Items["item"+strconv.Itoa(i)] = purchase.Item{Stock: 1 << 40}
		g.world.Accounts["user"+strconv.Itoa(i)] = purchase.Account{Balance: money.Cents(1 << 50)}
	}
	lc := wal.DefaultConfig("")
	lc.PreallocSize = 0
	lc.SegmentSize = 256 << 10
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		g.mu.Lock()
		for _, c := range g.cancels {
			c()
		}
		g.mu.Unlock()
		cancel()
		g.wg.Wait()
		for _, s := range g.svcs {
			s.Close()
		}
	})
	today := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, svc := range services.Builtin() {
		sc := deploy.ServiceConfig(g.dir, svc.ID, g.proto, g.net, lc, func() (participant.Resource, error) { return svc.New(g.world, today), nil })
		s, err := participant.Open(sc)
		if err != nil {
			t.Fatal(err)
		}
		g.svcs[svc.ID] = s
		g.wg.Add(1)
		go func() { defer g.wg.Done(); s.Run(ctx) }()
	}
	for i := 1; i <= n; i++ {
		g.ids = append(g.ids, uint64(i))
	}
	for _, id := range g.ids {
		g.start(id)
	}
	return g
}

// cfgOf is the Config replica id runs with.
func (g *group) cfgOf(id uint64) Config {
	lc := wal.DefaultConfig(filepath.Join(g.dir, "raft"+strconv.FormatUint(id, 10)))
	lc.PreallocSize = 0
	lc.SegmentSize = 256 << 10
	cc := deploy.CoordinatorConfig(g.dir, g.proto, tapNet{Network: g.net, g: g, id: id}, wal.Config{})
	rng := rand.New(rand.NewPCG(g.seed, id))
	var rmu sync.Mutex
	cc.Machine.Rand = func() uint64 { rmu.Lock(); defer rmu.Unlock(); return rng.Uint64() }
	// Snapshots every few dozen transactions: the kills restart replicas
	// from their snapshot files, and a replica down while the others
	// compacted catches up by fetching one.
	cc.Snapshot = coordinator.SnapshotConfig{LogBytes: 16 << 10, Every: 100 * time.Millisecond}
	return Config{
		ID: id, Peers: g.ids, Log: lc, Coordinator: cc, Transport: g.rt,
		Tick: 5 * time.Millisecond, ElectionTicks: 10,
	}
}

// start opens replica id from its raft log (new or left by a kill) and runs it.
func (g *group) start(id uint64) { g.startWith(id, nil) }

// startWith is start with the config changed by f (if not nil).
func (g *group) startWith(id uint64, f func(*Config)) *Replica {
	g.t.Helper()
	cfg := g.cfgOf(id)
	if f != nil {
		f(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.mu.Lock()
	g.reps[id], g.cancels[id] = r, cancel
	g.mu.Unlock()
	g.rt.Attach(id, r)
	g.rt.Isolate(id, false)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := r.Run(ctx); err != nil {
			g.t.Errorf("replica %d: %v", id, err)
		}
	}()
	return r
}

// kill stops replica id at once (its raft log keeps what it synced).
func (g *group) kill(id uint64) {
	g.rt.Isolate(id, true)
	g.mu.Lock()
	r, cancel := g.reps[id], g.cancels[id]
	delete(g.reps, id)
	g.mu.Unlock()
	cancel()
	<-r.Done()
}

// leader waits for a replica that serves as the leader.
func (g *group) leader(ctx context.Context) (uint64, *Replica) {
	for {
		g.mu.Lock()
		for id, r := range g.reps {
			if st := r.Status(); st.Serving {
				g.mu.Unlock()
				return id, r
			}
		}
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			g.t.Fatalf("seed %d: no leader: %v", g.seed, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (g *group) replicas() []*Replica {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Replica
	for _, id := range g.ids {
		if r := g.reps[id]; r != nil {
			out = append(out, r)
		}
	}
	return out
}

func (g *group) branches(tx string, rng *rand.Rand) []twopc.Branch {
	req := purchase.Request{TxID: tx, UserID: "user" + strconv.Itoa(rng.IntN(8)),
		Items: []purchase.LineItem{{ItemID: "item" + strconv.Itoa(rng.IntN(8)), Quantity: 1, Price: 100}},
		Card:  purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2099}}
	req.Amount = 100
	op, err := req.MarshalBinary()
	if err != nil {
		g.t.Fatal(err)
	}
	var bs []twopc.Branch
	for _, id := range services.IDs() {
		bs = append(bs, twopc.Branch{Node: id, Op: op})
	}
	return bs
}

// outcomes are what the clients were told, by transaction id: every
// answer, in order (a retry of the same id may be answered again).
type outcomes struct {
	mu  sync.Mutex
	got map[string][]twopc.Outcome
	// firstCommit records, after a kill, how long until the next commit.
	commits atomic.Int64
}

// submit runs tx until some replica answers with an outcome, asking every
// replica in turn (the client's rule: same id, follow the leader).
func (g *group) submit(ctx context.Context, tx string, bs []twopc.Branch, out *outcomes) error {
	for {
		for _, r := range g.replicas() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			o, err := r.Submit(cctx, tx, bs)
			cancel()
			if err == nil {
				out.mu.Lock()
				out.got[tx] = append(out.got[tx], o)
				out.mu.Unlock()
				if o.Committed {
					out.commits.Add(1)
				}
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// quiesce waits until the leader's coordinator has nothing in flight and
// no service holds a branch in doubt.
func (g *group) quiesce(ctx context.Context) {
	for {
		_, r := g.leader(ctx)
		c, err := r.Coordinator(ctx)
		if err == nil {
			st, err := c.Status(ctx)
			if err == nil && st.Inflight == 0 {
				doubt := 0
				for _, s := range g.svcs {
					s.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { doubt += m.InDoubt() })
				}
				if doubt == 0 {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			g.t.Fatalf("seed %d: not quiet: %v", g.seed, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// check verifies atomicity in the services and that every outcome a client
// was told is what the services hold: COMMITTED in all three, or in none;
// and no id was told two different outcomes.
func (g *group) check(ctx context.Context, out *outcomes) services.State {
	g.t.Helper()
	var st services.State
	for _, id := range services.IDs() {
		var serr error
		if err := g.svcs[id].Inspect(ctx, func(_ *twopc.Participant, r participant.Resource) { serr = st.Set(id, r) }); err != nil || serr != nil {
			g.t.Fatalf("state of %s: %v %v", id, err, serr)
		}
	}
	for _, err := range services.CheckAtomic(&st) {
		g.t.Errorf("seed %d: %v", g.seed, err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	for tx, os := range out.got {
		for _, o := range os[1:] {
			if o.Committed != os[0].Committed {
				g.t.Errorf("seed %d: %s was told two outcomes: %+v then %+v", g.seed, tx, os[0], o)
			}
		}
		_, committed := st.Order.Orders[tx]
		if os[0].Committed != committed {
			g.t.Errorf("seed %d: %s reported committed=%v, services hold committed=%v", g.seed, tx, os[0].Committed, committed)
		}
	}
	return st
}

func seedOf(t *testing.T) uint64 {
	if s := os.Getenv("DTX_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DTX_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// load runs clients submitting fresh transactions until ctx ends.
func (g *group) load(ctx context.Context, clients int, out *outcomes) *sync.WaitGroup {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(g.seed, uint64(c)+100))
			for i := 0; ctx.Err() == nil; i++ {
				tx := fmt.Sprintf("c%d-%d", c, i)
				// The transaction is finished under a context of its own:
				// a client that stops the load still learns its outcome.
				tctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				if err := g.submit(tctx, tx, g.branches(tx, rng), out); err != nil {
					g.t.Errorf("seed %d: %s: no outcome: %v", g.seed, tx, err)
				}
				cancel()
			}
		}()
	}
	return &wg
}

// TestGroupKillLeaderUnderLoad kills the leader of three replicas several
// times under load (restarting it from its raft log before the next kill):
// a new leader finishes every transaction, each transaction reported
// committed is committed in all three services, and no id gets two outcomes.
func TestGroupKillLeaderUnderLoad(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	kills := 3
	if testing.Short() {
		kills = 1
	}
	g := newGroup(t, seed, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithCancel(ctx)
	wg := g.load(lctx, 8, out)
	var gaps []time.Duration
	for k := 0; k < kills; k++ {
		waitCommits(ctx, t, out, 50)
		id, _ := g.leader(ctx)
		before := out.commits.Load()
		killed := time.Now()
		g.kill(id)
		for out.commits.Load() == before {
			if ctx.Err() != nil {
				t.Fatalf("seed %d: no commit after killing replica %d", seed, id)
			}
			time.Sleep(time.Millisecond)
		}
		gaps = append(gaps, time.Since(killed))
		nid, _ := g.leader(ctx)
		if nid == id {
			t.Fatalf("seed %d: killed replica %d still leads", seed, id)
		}
		g.start(id)
	}
	waitCommits(ctx, t, out, 50)
	stop()
	wg.Wait()
	g.quiesce(ctx)
	st := g.check(ctx, out)
	// Idle, the coordinator still rotates its generations and logs a
	// checkpoint each time: every replica compacts its raft log.
	for _, r := range g.replicas() {
		for r.Status().Compacted == 0 {
			if ctx.Err() != nil {
				t.Fatalf("seed %d: replica %d never compacted its raft log: %+v", seed, r.cfg.ID, r.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("seed %d: %d transactions, %d committed, %d kills; kill to next commit: %v", seed, len(out.got), len(st.Order.Orders), kills, gaps)
	if len(st.Order.Orders) == 0 {
		t.Fatalf("seed %d: nothing committed", seed)
	}
}

func waitCommits(ctx context.Context, t *testing.T, out *outcomes, n int64) {
	t.Helper()
	target := out.commits.Load() + n
	for out.commits.Load() < target {
		if ctx.Err() != nil {
			t.Fatalf("waiting for %d commits: %v", n, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupPartitionedLeader cuts the leader off from the other replicas
// (it keeps its protocol network and goes on believing it leads until its
// check-quorum timeout): it reports no outcome for a transaction submitted
// to it after the cut and sends no decision about it (its PREPAREs it may
// send, as a single coordinator sends them before BEGIN is synced), that
// transaction commits nowhere, and every COMMIT or ABORT it still sends a
// participant is the decision the group made.
func TestGroupPartitionedLeader(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	g := newGroup(t, seed, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithCancel(ctx)
	wg := g.load(lctx, 8, out)
	waitCommits(ctx, t, out, 100)
	old, oldRep := g.leader(ctx)
	g.tap.Store(true)
	cut := time.Now()
	g.rt.Isolate(old, true)
	// Straight to the cut-off leader, a fresh transaction: it must not be
	// reported (its BEGIN can never be committed by the group).
	rng := rand.New(rand.NewPCG(seed, 7))
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	o, err := oldRep.Submit(sctx, "after-cut", g.branches("after-cut", rng))
	scancel()
	if err == nil {
		t.Fatalf("seed %d: a leader cut off from the group reported %+v", seed, o)
	}
	var nle *NotLeaderError
	if !errors.As(err, &nle) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("seed %d: cut-off leader: %v", seed, err)
	}
	for {
		nid, _ := g.leader(ctx)
		if nid != old {
			break
		}
		time.Sleep(time.Millisecond)
	}
	waitCommits(ctx, t, out, 100)
	g.rt.Isolate(old, false) // heal: it rejoins as a follower
	waitCommits(ctx, t, out, 50)
	stop()
	wg.Wait()
	g.quiesce(ctx)
	st := g.check(ctx, out)
	if _, ok := st.Order.Orders["after-cut"]; ok {
		t.Errorf("seed %d: the transaction submitted to the cut-off leader committed", seed)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, s := range g.sent {
		if s.from != old || !s.at.After(cut) {
			continue
		}
		_, committed := st.Order.Orders[s.m.Tx]
		switch {
		case s.m.Type == twopc.MsgCommit && !committed:
			t.Errorf("seed %d: cut-off leader sent COMMIT of %s, which did not commit", seed, s.m.Tx)
		case s.m.Type == twopc.MsgAbort && committed:
			t.Errorf("seed %d: cut-off leader sent ABORT of %s, which committed", seed, s.m.Tx)
		case s.m.Tx == "after-cut" && (s.m.Type == twopc.MsgAbort || s.m.Type == twopc.MsgCommit):
			t.Errorf("seed %d: cut-off leader sent a decision (%v) of a transaction submitted after the cut", seed, s.m.Type)
		}
		n++
	}
	t.Logf("seed %d: %d transactions, %d committed; the cut-off leader sent %d messages after the cut", seed, len(out.got), len(st.Order.Orders), n)
}

// TestGroupThroughput is a rough look (not a benchmark: see dtx bench) at
// what the group sustains in this process under a closed loop of clients.
func TestGroupThroughput(t *testing.T) {
	if os.Getenv("DTX_GROUP_THROUGHPUT") == "" {
		t.Skip("set DTX_GROUP_THROUGHPUT=1")
	}
	g := newGroup(t, 1, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g.leader(ctx)
	out := &outcomes{got: map[string][]twopc.Outcome{}}
	lctx, stop := context.WithTimeout(ctx, 3*time.Second)
	defer stop()
	start := time.Now()
	wg := g.load(lctx, 64, out)
	wg.Wait()
	t.Logf("%d committed in %v: %.0f tx/s", out.commits.Load(), time.Since(start), float64(out.commits.Load())/time.Since(start).Seconds())
}
