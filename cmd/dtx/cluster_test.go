package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/freeport"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// A clCluster is the four dtx processes (dtx serve ...) on 127.0.0.1, each
// with free ports picked at the start and kept across restarts.
type clCluster struct {
	t     *testing.T
	bin   string
	dir   string
	world string
	grpc  map[string]string // node -> the address its peers dial
	lis   map[string]string // node -> the address it listens on
	http  map[string]string
	peers map[string]map[string]string // node -> peer -> address (proxies may stand in)
	procs map[string]*clProc
	// flags are extra flags of a node's dtx serve; nofile, if set, is the
	// file descriptor limit it runs under (ulimit -n).
	flags  map[string][]string
	nofile map[string]int
	mu     sync.Mutex
}

type clProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

func clFreeAddr(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newClCluster(t *testing.T, bin string, items, buyers, count int) *clCluster {
	c := &clCluster{t: t, bin: bin, dir: t.TempDir(), grpc: map[string]string{}, lis: map[string]string{},
		http: map[string]string{}, peers: map[string]map[string]string{}, procs: map[string]*clProc{}}
	c.world = filepath.Join(c.dir, "world.json")
	dtx(t, bin, "gen", "--count", "1", "--make-world", c.world, "--items", fmt.Sprint(items), "--buyers", fmt.Sprint(buyers), "--clean")
	for _, n := range clusterComponents {
		a := clFreeAddr(t)
		c.grpc[n], c.lis[n], c.http[n] = a, a, clFreeAddr(t)
	}
	for _, n := range clusterComponents {
		c.peers[n] = map[string]string{}
		for _, p := range clusterComponents {
			if p != n {
				c.peers[n][p] = c.grpc[p]
			}
		}
	}
	t.Cleanup(c.killAll)
	return c
}

func (c *clCluster) start(name string) {
	c.t.Helper()
	args := []string{"serve", name, "--listen", c.lis[name], "--http", c.http[name],
		"--data-dir", filepath.Join(c.dir, name), "--prepare-timeout", "1s", "--grace", "2s", "--call-timeout", "1s", "--log-level", "warn"}
	for p, a := range c.peers[name] {
		args = append(args, "--peer", p+"="+a)
	}
	if name != twopc.CoordinatorID {
		args = append(args, "--world", c.world)
	}
	args = append(args, c.flags[name]...)
	logf, err := os.OpenFile(filepath.Join(c.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, args...)
	if n := c.nofile[name]; n > 0 {
		cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n), c.bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &clProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	if err := client.WaitReady(context.Background(), nil, c.http[name], 30*time.Second, p.done); err != nil {
		c.t.Fatalf("%s did not come up: %v\n%s", name, err, c.logTail(name))
	}
}

func (c *clCluster) startAll() {
	for _, n := range clusterComponents {
		c.start(n)
	}
}

// kill sends sig to a component and waits for it to exit.
func (c *clCluster) kill(name string, sig syscall.Signal) {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (c *clCluster) killAll() {
	for _, n := range clusterComponents {
		c.kill(n, syscall.SIGKILL)
	}
}

func (c *clCluster) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (c *clCluster) client() *client.Client {
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], CallTimeout: 10 * time.Second, RetryFor: 60 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// settle waits until nothing is in flight or in doubt, checks every
// invariant through the state endpoints, and returns the state.
func (c *clCluster) settle(d time.Duration) *deploy.ClusterState {
	c.t.Helper()
	svcs := map[string]string{}
	for _, n := range engine.Services {
		svcs[n] = c.http[n]
	}
	deadline := time.Now().Add(d)
	for {
		cs, err := deploy.FetchClusterState(context.Background(), nil, c.http[twopc.CoordinatorID], svcs)
		if err == nil && cs.Quiet() {
			if err := cs.Check(); err != nil {
				c.t.Fatalf("invariants: %v", err)
			}
			return cs
		}
		if time.Now().After(deadline) {
			inDoubt := []string{}
			if cs != nil {
				inDoubt = cs.State.InDoubt
			}
			c.t.Fatalf("not settled after %v: err=%v in doubt=%v\n%s", d, err, inDoubt, c.logTail(twopc.CoordinatorID))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clLoad submits reqs at concurrency conc and records every outcome.
type clLoad struct {
	mu       sync.Mutex
	outcomes map[string]twopc.Outcome
	unknown  map[string]error // no outcome learned
	done     atomic.Int64
	twice    []string
}

func newClLoad() *clLoad {
	return &clLoad{outcomes: map[string]twopc.Outcome{}, unknown: map[string]error{}}
}

func (l *clLoad) run(cl *client.Client, reqs []purchase.Request, conc int) {
	jobs := make(chan *purchase.Request)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				o, err := cl.Submit(context.Background(), r)
				l.mu.Lock()
				if err != nil {
					l.unknown[r.TxID] = err
				} else {
					if prev, ok := l.outcomes[r.TxID]; ok && prev.Committed != o.Committed {
						l.twice = append(l.twice, fmt.Sprintf("%s: %v then %v", r.TxID, prev, o))
					}
					if _, ok := l.outcomes[r.TxID]; !ok {
						l.outcomes[r.TxID] = o
					}
				}
				l.mu.Unlock()
				l.done.Add(1)
			}
		}()
	}
	for i := range reqs {
		jobs <- &reqs[i]
	}
	close(jobs)
	wg.Wait()
}

// check compares every outcome a client learned with the durable state,
// and asks the coordinator for the ones it did not learn.
func (l *clLoad) check(t *testing.T, cl *client.Client, cs *deploy.ClusterState) (committed int) {
	t.Helper()
	for _, s := range l.twice {
		t.Errorf("two outcomes: %s", s)
	}
	for tx, err := range l.unknown {
		st, reason, qerr := cl.Outcome(context.Background(), tx)
		if qerr != nil {
			t.Errorf("%s: no outcome (%v) and the query failed: %v", tx, err, qerr)
			continue
		}
		switch st {
		case client.Status(1): // COMMITTED
			l.outcomes[tx] = twopc.Outcome{Tx: tx, Committed: true}
		case client.Status(2), client.Status(4): // ROLLED_BACK, UNKNOWN
			l.outcomes[tx] = twopc.Outcome{Tx: tx, Reason: reason}
		default:
			t.Errorf("%s: still %v after the cluster settled", tx, st)
		}
	}
	for tx, o := range l.outcomes {
		_, inOrder := cs.State.Order.Orders[tx]
		_, inInv := cs.State.Inventory.Reservations[tx]
		_, inPay := cs.State.Payment.Charges[tx]
		if inOrder != o.Committed || inInv != o.Committed || inPay != o.Committed {
			t.Errorf("%s: outcome committed=%v (%s) but order=%v reservation=%v charge=%v", tx, o.Committed, o.Reason, inOrder, inInv, inPay)
		}
		if o.Committed {
			committed++
		}
	}
	return committed
}

func clRequests(t *testing.T, bin, world string, n int, seed int, prefix string) []purchase.Request {
	t.Helper()
	out := dtx(t, bin, "gen", "--count", fmt.Sprint(n), "--world", world, "--seed", fmt.Sprint(seed), "--prefix", prefix, "--clean")
	var reqs []purchase.Request
	rd := purchase.NewReader(bytes.NewReader(out))
	for rd.Scan() {
		if ln := rd.Line(); ln.Err == nil {
			reqs = append(reqs, ln.Req)
		}
	}
	if len(reqs) < n/2 {
		t.Fatalf("gen gave %d requests", len(reqs))
	}
	return reqs
}

// TestClusterKillRestart starts the coordinator and the three services as
// four processes on 127.0.0.1, runs concurrent purchases through the gRPC
// client API, SIGKILLs and restarts each kind of process during the run,
// then checks every invariant through the state endpoints: nothing in
// doubt, stock and money add up, every committed purchase is at all three
// services and every rolled back one at none, no transaction with two
// outcomes. Then it drains the whole cluster with SIGTERM, starts it again,
// and checks that the state survived.
func TestClusterKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dtx and runs four processes")
	}
	bin := buildDtx(t)
	n := 2000
	c := newClCluster(t, bin, 50, 500, n)
	c.startAll()
	cl := c.client()
	reqs := clRequests(t, bin, c.world, n, 11, "k-")

	load := newClLoad()
	loadDone := make(chan struct{})
	start := time.Now()
	go func() { load.run(cl, reqs, 32); close(loadDone) }()
	// Kill each kind once, at spread-out points of the run.
	for i, name := range []string{"inventory", "coordinator", "payment", "order"} {
		at := int64(len(reqs) * (i + 1) / 6)
		for waited := time.Now(); ; {
			if load.done.Load() >= at || time.Since(waited) > 30*time.Second {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.kill(name, syscall.SIGKILL)
		t.Logf("%v: SIGKILL %s", time.Since(start).Round(time.Millisecond), name)
		time.Sleep(300 * time.Millisecond)
		c.start(name)
		t.Logf("%v: %s restarted", time.Since(start).Round(time.Millisecond), name)
	}
	<-loadDone
	t.Logf("%d purchases in %v (%d without an outcome at the client)", len(reqs), time.Since(start).Round(time.Millisecond), len(load.unknown))
	cs := c.settle(60 * time.Second)
	committed := load.check(t, cl, cs)
	t.Logf("%d committed, %d rolled back; %d client retries", committed, len(load.outcomes)-committed, cl.Retries())
	if committed < len(reqs)/4 {
		t.Errorf("only %d of %d committed", committed, len(reqs))
	}
	if t.Failed() {
		return
	}

	// Graceful stop of everything, then a restart: the state must survive.
	for i := len(clusterComponents) - 1; i >= 0; i-- {
		c.kill(clusterComponents[i], syscall.SIGTERM)
	}
	c.startAll()
	cs2 := c.settle(30 * time.Second)
	if len(cs2.State.Order.Orders) != len(cs.State.Order.Orders) || cs2.Coordinator.Epoch <= cs.Coordinator.Epoch {
		t.Fatalf("after a restart: %d orders (had %d), epoch %d (had %d)",
			len(cs2.State.Order.Orders), len(cs.State.Order.Orders), cs2.Coordinator.Epoch, cs.Coordinator.Epoch)
	}
	if again := load.check(t, cl, cs2); again != committed {
		t.Fatalf("%d committed after the restart, %d before", again, committed)
	}
}
