package twopc

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"testing"
)

// restoreRef is Participant.Restore as it was before replay was made
// cheaper (every record looked its branch up in the finished tables,
// whatever its type): the reference TestRestoreMatchesReference compares
// the machine's Restore with.
func restoreRef(p *Participant, r Record) error {
	if p.started {
		return ErrStarted
	}
	p.restored = true
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s: %s", ErrBadRecord, p.cfg.ID, r, why)
	}
	b := p.branchOf(r.Tx)
	a := AttemptOf(r.Attempt)
	switch r.Type {
	case RecPrepared:
		// A later attempt may prepare after an earlier one aborted (its
		// ABORTED or VOTED_NO record comes first in the log).
		// With Retention, a finished branch may have been forgotten (its
		// generation dropped, which the log does not record) and a late
		// duplicate PREPARE of the same attempt prepared it again, as a new
		// branch (see forget): the log then holds its first decision and a
		// second PREPARED. Replay does what the machine did then.
		forgotten := p.cfg.Retention > 0 && b != nil && (b.state == BranchAborted || b.state == BranchCommitted)
		if b != nil && (b.state != BranchAborted || a <= b.attempt) && !forgotten {
			return bad(fmt.Sprintf("branch prepared twice (was %s at attempt %d)", b.state, b.attempt))
		}
		keys, err := p.res.Keys(r.Tx, r.Op)
		if err != nil {
			return bad("keys: " + err.Error())
		}
		granted, err := p.locks.Acquire(r.Tx, keys)
		if err != nil || !granted {
			return bad(fmt.Sprintf("locks not free on replay (granted=%v, err=%v)", granted, err))
		}
		if err := ReplayPrepare(p.res, r.Tx, a, r.Op); err != nil {
			return bad("prepare fails on replay: " + err.Error())
		}
		p.branches[r.Tx] = &branch{state: BranchPrepared, op: r.Op, attempt: a, epoch: r.Epoch}
		p.inDoubt++
		p.maxEpoch = max(p.maxEpoch, r.Epoch)
	case RecCommitted:
		if b == nil || b.state != BranchPrepared {
			return bad("COMMITTED without PREPARED")
		}
		if a != b.attempt {
			return bad(fmt.Sprintf("COMMITTED for attempt %d, but attempt %d is prepared", a, b.attempt))
		}
		p.res.CommitAttempt(r.Tx, a, b.op)
		p.finish(r.Tx, b, BranchCommitted)
	case RecAborted, RecVotedNo:
		switch {
		case b == nil:
			p.settle(r.Tx, &branch{state: BranchAborted, reason: r.Reason, attempt: a})
		case a < b.attempt:
			// Never logged by this machine (a stale ABORT is only an
			// event); harmless: an earlier attempt changes nothing now.
		case b.state == BranchPrepared:
			p.res.AbortAttempt(r.Tx, b.attempt, b.op)
			b.attempt = a
			p.finish(r.Tx, b, BranchAborted)
		case b.state == BranchAborted:
			b.attempt = a
			p.settle(r.Tx, b)
		case b.state == BranchCommitted && p.cfg.Retention > 0:
			// The machine never logs an ABORT of a branch it knows
			// committed (it refuses it, an event). With Retention the
			// branch was forgotten (which the log does not record) and a
			// late ABORT of it remembered as a new aborted branch, as for
			// any unknown one (stepAbort): the coordinator, past its own
			// window, answered a late duplicate vote with a presumed
			// abort. Replay does what the machine did then; the
			// Resource's committed changes stand.
			p.settle(r.Tx, &branch{state: BranchAborted, reason: r.Reason, attempt: a})
		case b.state == BranchCommitted:
			return bad("ABORTED after COMMITTED")
		}
	case RecHeuristicCommitted, RecHeuristicAborted, RecHeuristicMismatch:
		if why := p.restoreHeuristic(r, b); why != "" {
			return bad(why)
		}
	case RecEvent:
	default:
		return bad("not a participant record")
	}
	return nil
}

// TestRestoreMatchesReference replays random records (valid histories and
// broken ones: prepared twice, decisions without a prepare, stale
// attempts, heuristic decisions, events) after a snapshot that holds
// finished branches in both generations, into a participant with Restore
// and one with restoreRef, with and without Retention, and requires the
// same error (or none) at every record and the same state after it: the
// machine's snapshot, every branch's state, the Resource's calls.
func TestRestoreMatchesReference(t *testing.T) {
	iters := 4000
	if testing.Short() {
		iters = 500
	}
	for _, retention := range []uint64{0, 50} {
		for seed := range uint64(iters) {
			rng := rand.New(rand.NewPCG(seed, retention))
			snap, held := refSnapshot(t, rng, retention)
			newOne := func() (*Participant, *kv) {
				res := newKV()
				res.prepared = maps.Clone(held.prepared) // the Resource's snapshot of the same turn
				cfg := testPartConfig("a")
				cfg.Retention = retention
				p, err := NewParticipant(cfg, multiKV{res})
				if err != nil {
					t.Fatal(err)
				}
				if err := p.RestoreSnapshot(snap); err != nil {
					t.Fatal(err)
				}
				return p, res
			}
			p, pres := newOne()
			q, qres := newOne()
			n := 1 + rng.IntN(40)
			for i := range n {
				r := refRecord(rng)
				errP, errQ := p.Restore(r), restoreRef(q, r)
				if fmt.Sprint(errP) != fmt.Sprint(errQ) {
					t.Fatalf("retention %d seed %d record %d %s: Restore says %v, the reference %v", retention, seed, i, r, errP, errQ)
				}
				if why := refDiff(p, q, pres, qres); why != "" {
					t.Fatalf("retention %d seed %d record %d %s: %s", retention, seed, i, r, why)
				}
				if errP != nil {
					break
				}
			}
		}
	}
}

var refTxs = []string{"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"}

// refSnapshot is the snapshot of a participant that finished some of
// refTxs (committed or aborted, at attempts 1 to 3) in the previous
// generation, some in the current one, and holds one prepared.
func refSnapshot(t *testing.T, rng *rand.Rand, retention uint64) ([]byte, *kv) {
	var l memLog
	cfg := testPartConfig("a")
	cfg.Retention = max(retention, 1000)
	res := newKV()
	p, err := NewParticipant(cfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	for i, tx := range refTxs[:6] {
		if i == 3 {
			p.rotate()
		}
		a := uint32(1 + rng.IntN(3))
		switch rng.IntN(4) {
		case 0: // left unknown
		case 1:
			p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: tx, Epoch: 1, Attempt: a})
		default:
			p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: tx, Epoch: 1, Op: []byte("k" + tx), Attempt: a})
			if rng.IntN(3) > 0 {
				p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: tx, Epoch: 1, Attempt: a})
			}
		}
		take(&l, p)
	}
	snap, err := p.AppendSnapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	return snap, res
}

// refRecord is a random participant record about one of refTxs.
func refRecord(rng *rand.Rand) Record {
	types := []RecType{RecPrepared, RecPrepared, RecPrepared, RecCommitted, RecCommitted, RecAborted, RecVotedNo,
		RecEvent, RecHeuristicCommitted, RecHeuristicAborted, RecHeuristicMismatch}
	r := Record{Type: types[rng.IntN(len(types))], Tx: refTxs[rng.IntN(len(refTxs))], Attempt: uint32(rng.IntN(4))}
	switch r.Type {
	case RecPrepared:
		r.Epoch = uint64(1 + rng.IntN(2))
		r.Op = []byte("k" + strconv.Itoa(rng.IntN(10)))
		if rng.IntN(8) == 0 {
			r.Op = []byte("k=fail")
		}
	case RecAborted, RecVotedNo, RecEvent:
		r.Reason = "why " + strconv.Itoa(rng.IntN(3))
	case RecHeuristicMismatch:
		r.Vote = VoteYes
	}
	return r
}

// refDiff says how p and q (and their Resources) differ, or "".
func refDiff(p, q *Participant, pres, qres *kv) string {
	sp, errP := p.AppendSnapshot(nil)
	sq, errQ := q.AppendSnapshot(nil)
	if errP != nil || errQ != nil {
		return fmt.Sprintf("snapshot: %v, %v", errP, errQ)
	}
	if !bytes.Equal(sp, sq) {
		return "the machines' snapshots differ"
	}
	for _, tx := range refTxs {
		s1, ok1 := p.Branch(tx)
		s2, ok2 := q.Branch(tx)
		if s1 != s2 || ok1 != ok2 {
			return fmt.Sprintf("%s: %v %v, the reference %v %v", tx, s1, ok1, s2, ok2)
		}
		if k1, k2 := p.Locks().HeldKeys(tx), q.Locks().HeldKeys(tx); fmt.Sprint(k1) != fmt.Sprint(k2) {
			return fmt.Sprintf("%s holds %v, in the reference %v", tx, k1, k2)
		}
	}
	if p.InDoubt() != q.InDoubt() || p.maxEpoch != q.maxEpoch || p.forgot != q.forgot || p.restored != q.restored {
		return "in doubt, epoch or flags differ"
	}
	if fmt.Sprint(p.Heuristics()) != fmt.Sprint(q.Heuristics()) {
		return fmt.Sprintf("heuristics %v, the reference %v", p.Heuristics(), q.Heuristics())
	}
	if fmt.Sprint(pres.prepared, pres.committed, pres.aborted, pres.calls) != fmt.Sprint(qres.prepared, qres.committed, qres.aborted, qres.calls) {
		return fmt.Sprintf("the Resources differ: %v %v %v, the reference %v %v %v", pres.prepared, pres.committed, pres.calls, qres.prepared, qres.committed, qres.calls)
	}
	return ""
}

// TestRestoreSnapshotKeepsNoPayload: a participant restored from a
// snapshot shares no bytes with it (finished branches load through
// transient views of the payload): overwriting the payload afterwards
// changes nothing it answers or snapshots.
func TestRestoreSnapshotKeepsNoPayload(t *testing.T) {
	for seed := range uint64(50) {
		snap, held := refSnapshot(t, rand.New(rand.NewPCG(seed, 1)), 50)
		payload := bytes.Clone(snap)
		res := newKV()
		res.prepared = maps.Clone(held.prepared)
		cfg := testPartConfig("a")
		cfg.Retention = 50
		p, err := NewParticipant(cfg, multiKV{res})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.RestoreSnapshot(payload); err != nil {
			t.Fatal(err)
		}
		for i := range payload {
			payload[i] = 'x'
		}
		again, err := p.AppendSnapshot(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, snap) {
			t.Fatalf("seed %d: the restored machine changed with its payload:\n%q\nwant\n%q", seed, again, snap)
		}
	}
}
