package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

var leaderKills = flag.Int("leader-kills", 5, "SIGKILLs of the leading replica in TestReplicatedLeaderKills (1 under -short)")

// TestReplicatedLeaderKills runs a replicated coordinator (three dtx serve
// coordinator --replica-id processes) and the three services as six
// processes on 127.0.0.1, loads it with `dtx run --coordinator A,B,C`, and
// SIGKILLs the leading replica again and again (restarting it from its
// data directory once a new leader serves); every fifth kill is a
// follower's instead, and every fifth kills the leader and then the next
// leader as soon as it is elected, while it restores its machine. A probe
// client measures the time from each kill of the leader alone to the
// first commit of a transaction submitted after it. Then, from outside: every transaction dtx run printed COMMITTED is
// at all three services, every ROLLED_BACK one at none, nothing is in
// doubt, and the invariants of every service hold.
func TestReplicatedLeaderKills(t *testing.T) {
	// The load must outlast the kills: each kill waits for a new leader
	// and a new commit while dtx run goes on.
	kills := *leaderKills
	n := max(6000, 1000*kills)
	if testing.Short() {
		kills, n = 1, 1500
	}
	bin := buildDtx(t)
	probes := max(20000, 1000*kills)
	c := newClCluster(t, bin, 50, 500, n+probes)
	// Stock and money for every purchase of the load and the probe, so
	// that rollbacks come from the kills and lock conflicts only.
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range 50 {
		w.Items[fmt.Sprintf("item-%d", i)] = purchase.Item{Stock: purchase.MaxStock}
	}
	for u := range 500 {
		w.Accounts[fmt.Sprintf("user-%d", u)] = purchase.Account{Balance: purchase.MaxBalance}
	}
	wdata, err := w.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.world, wdata, 0o644); err != nil {
		t.Fatal(err)
	}
	ids := []uint64{1, 2, 3}
	var spec, list []string
	for _, id := range ids {
		name := fmt.Sprintf("coordinator-%d", id)
		a := clFreeAddr(t)
		c.grpc[name], c.lis[name], c.http[name] = a, a, clFreeAddr(t)
		spec = append(spec, fmt.Sprintf("%d=%s", id, a))
		list = append(list, a)
	}
	coordList := strings.Join(list, ",")
	for _, s := range engine.Services {
		c.peers[s][twopc.CoordinatorID] = coordList
		c.start(s)
	}
	startReplica := func(id uint64) {
		name := fmt.Sprintf("coordinator-%d", id)
		args := []string{"serve", twopc.CoordinatorID, "--replica-id", fmt.Sprint(id), "--replicas", strings.Join(spec, ","),
			"--listen", c.lis[name], "--http", c.http[name], "--data-dir", filepath.Join(c.dir, name),
			"--prepare-timeout", "1s", "--grace", "2s", "--call-timeout", "1s", "--log-level", "warn",
			// Snapshots every few hundred transactions: kills land during
			// snapshot writes and compactions, and a replica killed for a
			// while comes back behind the others' compacted logs and
			// fetches a snapshot.
			"--snapshot-log-bytes", "262144", "--snapshot-every", "2s"}
		for _, s := range engine.Services {
			args = append(args, "--peer", s+"="+c.grpc[s])
		}
		logf, err := os.OpenFile(filepath.Join(c.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &clProc{cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); logf.Close(); close(p.done) }()
		c.mu.Lock()
		c.procs[name] = p
		c.mu.Unlock()
	}
	t.Cleanup(func() {
		for _, id := range ids {
			c.kill(fmt.Sprintf("coordinator-%d", id), syscall.SIGKILL)
		}
	})
	for _, id := range ids {
		startReplica(id)
	}
	// leader returns the replica that serves as the leader.
	leader := func(d time.Duration) uint64 {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			for _, id := range ids {
				name := fmt.Sprintf("coordinator-%d", id)
				c.mu.Lock()
				_, up := c.procs[name]
				c.mu.Unlock()
				if !up {
					continue
				}
				var st deploy.CoordStatus
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := (*client.HTTP)(nil).Get(ctx, c.http[name], "/v1/status", &st)
				cancel()
				if err == nil && st.Replica != nil && st.Replica.Serving {
					return id
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no leader after %v\n%s", d, c.logTail("coordinator-1"))
		return 0
	}
	leader(30 * time.Second)

	// The load: dtx run, reading every printed outcome.
	reqFile := filepath.Join(c.dir, "requests.jsonl")
	if err := os.WriteFile(reqFile, dtx(t, bin, "gen", "--count", fmt.Sprint(n), "--world", c.world, "--seed", "3", "--prefix", "rk-", "--clean"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command(bin, "run", "--coordinator", coordList, "--input", reqFile, "--concurrency", "32")
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var runErr strings.Builder
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	var printed sync.Map // tx -> status
	var lines atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] != "line" {
				if prev, ok := printed.LoadOrStore(f[0], f[1]); ok && prev != f[1] {
					t.Errorf("%s printed %s and %s", f[0], prev, f[1])
				}
				lines.Add(1)
			}
		}
	}()

	// The probe: new transactions, one at a time per goroutine, through a
	// client that knows every replica; it records when each committed and
	// when it was submitted.
	probeReqs := clRequests(t, bin, c.world, probes, 9, "probe-")
	pcl, err := client.Dial(client.Config{Addr: coordList, CallTimeout: 5 * time.Second, RetryFor: 60 * time.Second, BackoffBase: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	type commit struct{ submitted, done time.Time }
	var pmu sync.Mutex
	var commits []commit
	probeOut := map[string]twopc.Outcome{}
	stopProbe := make(chan struct{})
	var pwg sync.WaitGroup
	var next atomic.Int64
	for range 4 {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for {
				select {
				case <-stopProbe:
					return
				default:
				}
				i := int(next.Add(1)) - 1
				if i >= len(probeReqs) {
					return
				}
				time.Sleep(2 * time.Millisecond) // a probe, not a second load
				r := &probeReqs[i]
				start := time.Now()
				o, err := pcl.Submit(context.Background(), r)
				if err != nil {
					continue
				}
				pmu.Lock()
				probeOut[r.TxID] = o
				if o.Committed {
					commits = append(commits, commit{start, time.Now()})
				}
				pmu.Unlock()
			}
		}()
	}

	// resolved polls the services' in-doubt branches from a kill on and
	// returns how long until every branch in doubt at the first poll after
	// the kill is decided (-1: none was in doubt).
	resolved := func(killed time.Time) time.Duration {
		inDoubt := func() map[string]bool {
			m := map[string]bool{}
			for _, s := range engine.Services {
				// The admin API's list, not /v1/state: a state dump
				// streams every committed entry, which takes seconds
				// once the services hold a hundred thousand.
				var d server.AdminInDoubt
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := (*client.HTTP)(nil).Get(ctx, c.http[s], "/v1/admin/in-doubt", &d)
				cancel()
				if err != nil {
					t.Errorf("in-doubt poll of %s: %v", s, err)
					continue
				}
				for _, b := range d.InDoubt {
					m[s+"/"+b.ID] = true
				}
			}
			return m
		}
		first := inDoubt()
		if len(first) == 0 {
			return -1
		}
		for deadline := killed.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			now, left := inDoubt(), 0
			for b := range first {
				if now[b] {
					left++
				}
			}
			if left == 0 {
				return time.Since(killed)
			}
		}
		t.Errorf("branches in doubt at a kill still in doubt 30s later: %v", first)
		return -1
	}
	// Every fifth kill, from the fourth on, is a follower's; every fifth
	// from the fifth on kills the leader and then its successor as soon as
	// it is elected (during its own recovery); the others kill the leader.
	var gaps, resolves []time.Duration
	var followerKills, doubleKills, recoveringKills int
	for k := 0; k < kills; k++ {
		// Kill k once the run printed (k+1)/(kills+3) of its outcomes (or at
		// once, if a slow failover already took the run past that).
		for target := int64((k + 1) * n / (kills + 3)); lines.Load() < target; {
			select {
			case <-readDone:
				t.Fatalf("dtx run ended after %d outcomes, before kill %d: %s", lines.Load(), k+1, runErr.String())
			case <-time.After(5 * time.Millisecond):
			}
		}
		id := leader(10 * time.Second)
		name := fmt.Sprintf("coordinator-%d", id)
		switch k % 5 {
		case 3:
			// A follower: the leader goes on; the follower catches up
			// when it comes back.
			fid := ids[0]
			for _, x := range ids {
				if x != id {
					fid = x
				}
			}
			fkilled := time.Now()
			c.kill(fmt.Sprintf("coordinator-%d", fid), syscall.SIGKILL)
			followerKills++
			newCommits := func() int {
				pmu.Lock()
				defer pmu.Unlock()
				m := 0
				for _, cm := range commits {
					if cm.submitted.After(fkilled) {
						m++
					}
				}
				return m
			}
			for deadline := time.Now().Add(30 * time.Second); newCommits() < 20; time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("kill %d: no progress within 30s of killing follower coordinator-%d (leader %d; %d of %d outcomes printed)\n%s",
						k+1, fid, id, lines.Load(), n, replicaDump(c, ids))
				}
			}
			if nid := leader(10 * time.Second); nid != id {
				t.Logf("kill %d: the leader changed from %d to %d after a follower was killed", k+1, id, nid)
			}
			startReplica(fid)
			continue
		case 4:
			// The leader, then the next leader as soon as it is elected,
			// while it restores and starts its machine; the first comes
			// back at once so that two of three can elect a third.
			c.kill(name, syscall.SIGKILL)
			var nid uint64
			for deadline := time.Now().Add(30 * time.Second); nid == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no new leader elected within 30s of killing %s", name)
				}
				for _, x := range ids {
					var st deploy.CoordStatus
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					err := (*client.HTTP)(nil).Get(ctx, c.http[fmt.Sprintf("coordinator-%d", x)], "/v1/status", &st)
					cancel()
					if x != id && err == nil && st.Replica != nil && st.Replica.State == "leader" {
						nid = x
						if !st.Replica.Serving {
							recoveringKills++
						}
						break
					}
				}
			}
			c.kill(fmt.Sprintf("coordinator-%d", nid), syscall.SIGKILL)
			startReplica(id)
			if got := leader(30 * time.Second); got == nid {
				t.Fatalf("killed coordinator-%d still leads", nid)
			}
			startReplica(nid)
			doubleKills++
			continue
		}
		killed := time.Now()
		c.kill(name, syscall.SIGKILL)
		resolvedc := make(chan time.Duration, 1)
		go func() { resolvedc <- resolved(killed) }()
		var gap time.Duration
		for deadline := time.Now().Add(30 * time.Second); gap == 0; {
			pmu.Lock()
			for _, cm := range commits {
				if cm.submitted.After(killed) && (gap == 0 || cm.done.Sub(killed) < gap) {
					gap = cm.done.Sub(killed)
				}
			}
			pmu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("no commit within 30s of killing %s", name)
			}
			time.Sleep(2 * time.Millisecond)
		}
		gaps = append(gaps, gap)
		if r := <-resolvedc; r >= 0 {
			resolves = append(resolves, r)
		}
		if nid := leader(10 * time.Second); nid == id {
			t.Fatalf("killed %s still leads", name)
		}
		startReplica(id)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("dtx run: %v\n%s", err, runErr.String())
	}
	<-readDone
	close(stopProbe)
	pwg.Wait()

	// From outside: the state of every service, read from the leader and
	// the services once nothing is in flight or in doubt.
	lead := fmt.Sprintf("coordinator-%d", leader(10*time.Second))
	c.http[twopc.CoordinatorID] = c.http[lead]
	cs := c.settle(60 * time.Second)
	committed, rolled := 0, 0
	printed.Range(func(k, v any) bool {
		tx, st := k.(string), v.(string)
		_, inOrder := cs.State.Order.Orders[tx]
		_, inInv := cs.State.Inventory.Reservations[tx]
		_, inPay := cs.State.Payment.Charges[tx]
		switch st {
		case "COMMITTED":
			committed++
			if !inOrder || !inInv || !inPay {
				t.Errorf("%s printed COMMITTED but order=%v reservation=%v charge=%v", tx, inOrder, inInv, inPay)
			}
		case "ROLLED_BACK":
			rolled++
			if inOrder || inInv || inPay {
				t.Errorf("%s printed ROLLED_BACK but order=%v reservation=%v charge=%v", tx, inOrder, inInv, inPay)
			}
		}
		return true
	})
	for tx, o := range probeOut {
		if _, inOrder := cs.State.Order.Orders[tx]; inOrder != o.Committed {
			t.Errorf("probe %s: committed=%v but order=%v", tx, o.Committed, inOrder)
		}
	}
	if committed == 0 {
		t.Fatal("nothing committed")
	}
	// Every replica snapshotted its state and compacted its raft log (or
	// installed a snapshot fetched from another), once the load was long
	// enough for two snapshots (a replica compacts at its second).
	for _, id := range ids {
		name := fmt.Sprintf("coordinator-%d", id)
		var st deploy.CoordStatus
		if err := (*client.HTTP)(nil).Get(context.Background(), c.http[name], "/v1/status", &st); err != nil || st.Replica == nil {
			t.Fatalf("status of %s: %v", name, err)
		}
		if st.Replica.Compacted == 0 && !testing.Short() {
			t.Errorf("%s never compacted its raft log: %+v", name, *st.Replica)
		}
		t.Logf("%s: raft log compacted up to %d of %d", name, st.Replica.Compacted, st.Replica.Applied)
	}
	slices.Sort(gaps)
	pct := func(p float64) time.Duration { return gaps[min(len(gaps)-1, int(p*float64(len(gaps))))] }
	t.Logf("%d kills: %d of the leader alone, %d of a follower, %d of the leader and then of the next one once elected (%d of them before it served); dtx run: %d committed, %d rolled back; probe: %d committed",
		kills, len(gaps), followerKills, doubleKills, recoveringKills, committed, rolled, len(commits))
	t.Logf("kill of the leader alone to first new commit: p50 %v, p99 %v, max %v", pct(0.5), pct(0.99), gaps[len(gaps)-1])
	slices.Sort(resolves)
	if len(resolves) > 0 {
		rp := func(p float64) time.Duration { return resolves[min(len(resolves)-1, int(p*float64(len(resolves))))] }
		t.Logf("kill to every branch in doubt at the kill decided (%d kills with branches in doubt): p50 %v, p99 %v, max %v",
			len(resolves), rp(0.5), rp(0.99), resolves[len(resolves)-1])
	}
}

// replicaDump describes every replica for a failure message: its status
// and the tail of its log.
func replicaDump(c *clCluster, ids []uint64) string {
	var b strings.Builder
	for _, id := range ids {
		name := fmt.Sprintf("coordinator-%d", id)
		var st deploy.CoordStatus
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := (*client.HTTP)(nil).Get(ctx, c.http[name], "/v1/status", &st)
		cancel()
		fmt.Fprintf(&b, "== %s: ", name)
		if err != nil || st.Replica == nil {
			fmt.Fprintf(&b, "status: %v\n", err)
		} else {
			fmt.Fprintf(&b, "%+v\n", *st.Replica)
		}
		b.WriteString(c.logTail(name))
		b.WriteString("\n")
	}
	return b.String()
}
