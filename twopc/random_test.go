package twopc

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

var seedFlag = flag.Uint64("seed", 0, "run only this seed of TestRandomizedAtomicity")

// TestRandomizedAtomicity runs the two machines against each other on a
// network that drops, duplicates, delays and reorders messages, with
// crashes of the coordinator and participants that lose the unsynced tail
// of their logs, then heals everything and checks that every transaction
// ended the same way everywhere, that every outcome a client heard is what
// happened, and that nothing is left in doubt.
func TestRandomizedAtomicity(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	if *seedFlag != 0 {
		runRandomized(t, *seedFlag)
		return
	}
	var restarts [deadlockPolicyEnd]uint64
	for s := uint64(1); s <= uint64(seeds); s++ {
		n, ok := runRandomized(t, s)
		if !ok {
			return
		}
		restarts[DeadlockPolicy(1+s%3)] += n
	}
	// Deadlock victims are restarted (same id, timestamp and ops) under
	// both policies that pick victims; the runs above must have exercised
	// restarts, or they prove nothing about them.
	for _, p := range []DeadlockPolicy{DeadlockDetect, DeadlockWoundWait} {
		if restarts[p] == 0 {
			t.Errorf("%v: no transaction was restarted in %d seeds", p, seeds)
		}
	}
	t.Logf("restarts: detect %d, wound-wait %d, timeout %d", restarts[DeadlockDetect], restarts[DeadlockWoundWait], restarts[DeadlockTimeout])
}

type simNode struct {
	id   string
	log  memLog
	res  *kv
	part *Participant
	down int // ticks left down
}

type inflight struct {
	m  Message
	at int // step at which it may be delivered
}

func runRandomized(t *testing.T, seed uint64) (restarts uint64, ok bool) {
	defer func() {
		if !ok || t.Failed() {
			t.Errorf("failed with seed %d (replay: go test ./twopc -run TestRandomizedAtomicity -seed %d)", seed, seed)
			ok = false
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 7))
	policy := DeadlockPolicy(1 + seed%3)
	nodes := []string{"a", "b", "c"}
	var clog memLog
	coord := mustCoord(t, &clog)
	coordDown := 0
	parts := map[string]*simNode{}
	for _, id := range nodes {
		n := &simNode{id: id, res: newKV()}
		n.part = mustPartPolicy(t, id, &n.log, n.res, policy)
		parts[id] = n
	}
	var net []inflight
	heard := map[string]Outcome{} // first outcome each client heard
	txNodes := map[string][]string{}
	txBranches := map[string][]Branch{}
	const txs = 40
	keys := []string{"k1", "k2", "k3"} // hot keys: real lock contention
	proposed := 0
	faulty := true
	step := 0

	deliver := func(msgs []Message) {
		for _, m := range msgs {
			if faulty && rng.IntN(10) == 0 {
				continue // drop
			}
			delay := 0
			if faulty {
				delay = rng.IntN(4)
			}
			net = append(net, inflight{m: m, at: step + delay})
			if faulty && rng.IntN(15) == 0 {
				net = append(net, inflight{m: m, at: step + rng.IntN(8)}) // duplicate, maybe reordered
			}
		}
	}
	flushCoord := func() {
		rd := coord.Ready().Clone()
		clog.apply(&rd)
		coord.Advance()
		deliver(rd.Messages)
		for _, o := range rd.Outcomes {
			if o.Recovered {
				continue
			}
			if prev, ok := heard[o.Tx]; ok {
				if prev.Committed != o.Committed {
					t.Errorf("tx %s: client heard %v then %v", o.Tx, prev, o)
				}
				if !o.Duplicate {
					t.Errorf("tx %s: second outcome not marked duplicate", o.Tx)
				}
			}
			if _, ok := heard[o.Tx]; !ok {
				heard[o.Tx] = o
			}
		}
	}
	flushPart := func(n *simNode) {
		rd := n.part.Ready().Clone()
		n.log.apply(&rd)
		n.part.Advance()
		deliver(rd.Messages)
	}

	for step = 0; step < 4000; step++ {
		if step == 2500 {
			faulty = false // heal: no more faults, everyone comes back
		}
		// Proposals, including resubmissions of earlier ids.
		if coordDown == 0 && proposed < txs && rng.IntN(3) == 0 {
			id := fmt.Sprintf("t%d", proposed)
			if proposed > 0 && rng.IntN(8) == 0 {
				id = fmt.Sprintf("t%d", rng.IntN(proposed))
			} else {
				proposed++
			}
			var bs []Branch
			for i, n := range nodes {
				if i == 2 && rng.IntN(3) == 0 {
					break // some txs have two participants
				}
				op := keys[rng.IntN(len(keys))]
				if rng.IntN(3) == 0 {
					op += "+" + keys[rng.IntN(len(keys))] // multi-key: local deadlocks
				}
				if rng.IntN(12) == 0 {
					op += "=fail"
				}
				bs = append(bs, Branch{Node: n, Op: []byte(op)})
			}
			// A resubmission is the same request: same branches, same ops.
			if prev, ok := txBranches[id]; ok {
				bs = prev
			} else {
				txBranches[id] = bs
				for _, b := range bs {
					txNodes[id] = append(txNodes[id], b.Node)
				}
			}
			if err := coord.Propose(id, bs); err != nil {
				t.Fatalf("propose: %v", err)
			}
			flushCoord()
		}
		// Deliver due messages in random order.
		rng.Shuffle(len(net), func(i, j int) { net[i], net[j] = net[j], net[i] })
		rest := net[:0]
		var due []Message
		for _, f := range net {
			if f.at <= step {
				due = append(due, f.m)
			} else {
				rest = append(rest, f)
			}
		}
		net = rest
		for _, m := range due {
			if m.To == CoordinatorID {
				if coordDown > 0 {
					continue
				}
				coord.Step(m)
				flushCoord()
			} else if n := parts[m.To]; n.down == 0 {
				n.part.Step(m)
				flushPart(n)
			}
		}
		// Time.
		if coordDown > 0 {
			if coordDown--; coordDown == 0 {
				coord = mustCoord(t, &clog)
				flushCoord()
			}
		} else {
			coord.Tick()
			flushCoord()
		}
		for _, id := range nodes {
			n := parts[id]
			if n.down > 0 {
				if n.down--; n.down == 0 {
					n.res = newKV()
					n.part = mustPartPolicy(t, id, &n.log, n.res, policy)
					flushPart(n)
				}
				continue
			}
			n.part.Tick()
			flushPart(n)
		}
		// Crashes: several components may be down at once.
		if faulty && rng.IntN(150) == 0 && coordDown == 0 {
			// A crash may land between a write and its sync.
			restarts += coord.DeadlockStats().Restarts
			clog.crash()
			coordDown = 1 + rng.IntN(30)
		}
		for _, id := range nodes {
			if n := parts[id]; faulty && n.down == 0 && rng.IntN(120) == 0 {
				n.log.crash()
				n.down = 1 + rng.IntN(30)
			}
		}
	}

	restarts += coord.DeadlockStats().Restarts
	// Everyone is up and healed. Check.
	if coordDown > 0 {
		t.Fatalf("coordinator still down")
	}
	if coord.Inflight() != 0 {
		t.Errorf("coordinator has %d unfinished transactions after healing", coord.Inflight())
	}
	for _, id := range nodes {
		if n := parts[id]; n.part.InDoubt() != 0 {
			t.Errorf("%s: in doubt after healing: %v", id, n.part.InDoubtTxs())
		}
	}
	for i := 0; i < proposed; i++ {
		tx := fmt.Sprintf("t%d", i)
		st, known := coord.State(tx)
		var committedAt []string
		for _, id := range nodes {
			if _, ok := parts[id].res.committed[tx]; ok {
				committedAt = append(committedAt, id)
			}
		}
		o, told := heard[tx]
		switch {
		case known && st == CoordCommitted:
			// Every participant of the tx has it committed; the others
			// were not part of it. A committed tx's participants all ACKed.
			if !slices.Equal(committedAt, txNodes[tx]) {
				t.Errorf("%s: committed at %v, but its participants are %v", tx, committedAt, txNodes[tx])
			}
			if told && !o.Committed {
				t.Errorf("%s: client told rolled back, but it committed", tx)
			}
			// Every participant committed the attempt the coordinator did,
			// once.
			for _, id := range committedAt {
				b := parts[id].part.branchOf(tx)
				if f, _ := coord.finishedTx(tx); b.attempt != f.attempt {
					t.Errorf("%s: %s committed attempt %d, the coordinator attempt %d", tx, id, b.attempt, f.attempt)
				}
				if n := parts[id].res.calls["commit "+tx]; n != 1 {
					t.Errorf("%s: %s committed %d times", tx, id, n)
				}
			}
		default:
			if len(committedAt) > 0 {
				t.Errorf("%s: coordinator state %v (known %v) but committed at %v", tx, st, known, committedAt)
			}
			if told && o.Committed {
				t.Errorf("%s: client told COMMITTED, but it is %v", tx, st)
			}
		}
	}
	// Committed at a participant => that participant was in the tx and the
	// coordinator committed it; and each participant's log replays to the
	// same state.
	for _, id := range nodes {
		n := parts[id]
		fresh := newKV()
		mustPartPolicy(t, id, &n.log, fresh, policy)
		if !slices.Equal(sortedKeys(fresh.committed), sortedKeys(n.res.committed)) {
			t.Errorf("%s: log replays to a different state", id)
		}
	}
	return restarts, !t.Failed()
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
