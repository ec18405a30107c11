package twopc

import (
	"fmt"
	"maps"
	"testing"
)

// TestParticipantRetention: a finished branch is remembered for at least
// Retention ticks and forgotten Generations spans
// (GenerationTicks) after its generation began; a COMMIT resent for a
// forgotten branch is ACKed without applying anything, while before any
// generation was dropped a COMMIT for an unknown branch is still refused;
// the generations survive a snapshot.
func TestParticipantRetention(t *testing.T) {
	const w = 10
	var l memLog
	res := newKV()
	cfg := testPartConfig("a")
	cfg.Retention = w
	p, err := NewParticipant(cfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)

	// Before anything was forgotten, a COMMIT for an unknown branch is a
	// protocol violation: refused, not ACKed.
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "never", Epoch: 1})
	if rd := take(&l, p); len(msgsOf(rd, MsgAck)) != 0 {
		t.Fatalf("COMMIT for a branch never prepared was ACKed before any retention ran out: %+v", rd)
	}

	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	take(&l, p)
	if res.calls["commit t1"] != 1 {
		t.Fatalf("t1 not committed: %v", res.calls)
	}
	tick := func(n int) {
		for range n {
			p.Tick()
			take(&l, p)
		}
	}
	// Remembered for at least w ticks: a duplicate COMMIT is ACKed as a
	// duplicate, a duplicate PREPARE is not prepared again.
	for i := 0; i < w; i++ {
		if _, ok := p.Branch("t1"); !ok {
			t.Fatalf("t1 forgotten after %d ticks, before the retention of %d", i, w)
		}
		tick(1)
	}
	p.Step(prepareMsg("t1", "a", "k1", 1))
	if rd := take(&l, p); len(rd.Messages) != 0 || res.calls["prepare t1"] != 1 {
		t.Fatalf("a late PREPARE of a remembered committed branch must change nothing: %+v %v", rd, res.calls)
	}
	// Forgotten once Generations spans have passed since its
	// generation began (tick 0), not before.
	span := int(GenerationTicks(w))
	if span >= w/2 || (Generations-1)*span < w {
		t.Fatalf("GenerationTicks(%d) = %d: the test wants several generations in a retention, covering it", w, span)
	}
	tick(Generations*span - w - 1)
	if _, ok := p.Branch("t1"); !ok {
		t.Fatalf("t1 forgotten before %d generations passed", Generations)
	}
	tick(1)
	if _, ok := p.Branch("t1"); ok {
		t.Fatalf("t1 still remembered %d ticks after it finished, %d generations of %d ticks", Generations*span, Generations, span)
	}
	if n, rot := p.FinishedStats(); n != 0 || rot != Generations {
		t.Fatalf("FinishedStats = %d remembered, %d rotations; want 0, %d", n, rot, Generations)
	}
	// The resent COMMIT of the forgotten branch is ACKed, nothing applied.
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	rd := take(&l, p)
	if a := msgsOf(rd, MsgAck); len(a) != 1 || a[0].Tx != "t1" {
		t.Fatalf("COMMIT for a forgotten branch must be ACKed: %+v", rd)
	}
	if res.calls["commit t1"] != 1 {
		t.Fatalf("COMMIT for a forgotten branch applied again: %v", res.calls)
	}

	// The snapshot keeps the generations and the flag.
	p.Step(prepareMsg("t2", "a", "k2", 1))
	take(&l, p)
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t2", Epoch: 1})
	take(&l, p)
	tick(w / 2) // t2 moves to an older generation than t3's
	p.Step(prepareMsg("t3", "a", "k3", 1))
	take(&l, p)
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t3", Epoch: 1})
	take(&l, p)
	snap, err := p.AppendSnapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newKV()
	r.committed = maps.Clone(res.committed)
	q, err := NewParticipant(cfg, multiKV{r})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	q.Start()
	var ql memLog
	take(&ql, q)
	for _, tx := range []string{"t2", "t3"} {
		if _, ok := q.Branch(tx); !ok {
			t.Fatalf("%s lost by the snapshot", tx)
		}
	}
	q.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	if a := msgsOf(take(&ql, q), MsgAck); len(a) != 1 {
		t.Fatal("the snapshot lost the fact that branches were forgotten: COMMIT of a forgotten branch not ACKed")
	}
	// Restored generations keep forgetting: t2 (older) goes first, t3
	// after at least a span more.
	q.Tick()
	take(&ql, q)
	for i := 1; ; i++ {
		if _, ok := q.Branch("t2"); !ok {
			break
		}
		if i > Generations*span {
			t.Fatalf("t2 still remembered %d ticks after the restore, past %d generations", i, Generations)
		}
		q.Tick()
		take(&ql, q)
	}
	if _, ok := q.Branch("t3"); !ok {
		t.Fatal("t3, of a newer generation, forgotten with t2 after the restore")
	}
}

// BenchmarkParticipantSnapshotPause measures the machine's part of a
// snapshot on the loop (SnapshotDeferred: a copy of the finished-branch
// entries) for 20,000 and 200,000 finished branches.
func BenchmarkParticipantSnapshotPause(b *testing.B) {
	for _, n := range []int{20_000, 200_000} {
		p, err := NewParticipant(testPartConfig("a"), multiKV{newKV()})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			p.settle(fmt.Sprintf("tx-%024d", i), &branch{state: BranchCommitted, attempt: 1})
		}
		b.Run(fmt.Sprintf("branches=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := p.SnapshotDeferred(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReplayForgottenThenPreparedAgain: a branch aborted, forgotten after
// its retention, then prepared again by a late duplicate PREPARE of the
// same attempt leaves a log with ABORTED and then a second PREPARED of
// that attempt. Replaying it must rebuild what the machine did (the
// branch prepared again, in doubt), not refuse the log: a participant
// that cannot replay its own log cannot restart. Found by the fault
// campaign (seed 5071028 and 68 others in 100,000 runs).
func TestReplayForgottenThenPreparedAgain(t *testing.T) {
	const w = 5
	var l memLog
	cfg := testPartConfig("a")
	cfg.Retention = w
	p, err := NewParticipant(cfg, multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	p.Step(abortMsg("t1", "a", 1))
	take(&l, p)
	for range 2*w + 1 {
		p.Tick()
		take(&l, p)
	}
	if _, ok := p.Branch("t1"); ok {
		t.Fatal("t1 still remembered after 2×retention")
	}
	p.Step(prepareMsg("t1", "a", "k1", 1)) // late duplicate
	take(&l, p)
	if b, ok := p.Branch("t1"); !ok || b != BranchPrepared {
		t.Fatalf("the late PREPARE of a forgotten branch: %+v, %v; want it prepared again", b, ok)
	}

	q, err := NewParticipant(cfg, multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := q.Restore(r); err != nil {
			t.Fatalf("replay of its own log: %v", err)
		}
	}
	if b, ok := q.Branch("t1"); !ok || b != BranchPrepared {
		t.Fatalf("replayed: %+v, %v; want t1 prepared (in doubt)", b, ok)
	}
	// Without retention nothing is ever forgotten: the same log is a
	// branch prepared twice, refused.
	cfg.Retention = 0
	z, err := NewParticipant(cfg, multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	for _, r := range l.recs {
		if rerr = z.Restore(r); rerr != nil {
			break
		}
	}
	if rerr == nil {
		t.Fatal("without retention, PREPARED after ABORTED of the same attempt was accepted")
	}
}

// TestReplayForgottenCommittedThenAborted: a participant with Retention
// commits a branch and forgets it; a late duplicate of its YES vote
// reaches a coordinator that has forgotten the transaction too, which
// answers ABORT (presumed abort); the participant remembers that ABORT as
// a new aborted branch, so its log holds COMMITTED and then ABORTED of the
// same attempt. Replaying it must rebuild what the machine did, with the
// committed changes kept, not refuse the log: a participant that cannot
// replay its own log cannot restart. Found by the fault campaign with a
// replicated coordinator (seed 2099901 in 100,000 runs).
func TestReplayForgottenCommittedThenAborted(t *testing.T) {
	const w = 5
	var l memLog
	cfg := testPartConfig("a")
	cfg.Retention = w
	res := newKV()
	p, err := NewParticipant(cfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	take(&l, p)
	for range 2*w + 1 {
		p.Tick()
		take(&l, p)
	}
	if _, ok := p.Branch("t1"); ok {
		t.Fatal("t1 still remembered after 2×retention")
	}
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1, Reason: "presumed abort"})
	take(&l, p)
	if b, ok := p.Branch("t1"); !ok || b != BranchAborted {
		t.Fatalf("an ABORT of a forgotten branch: %+v, %v; want it remembered as aborted", b, ok)
	}
	if res.calls["commit t1"] != 1 || res.calls["abort t1"] != 0 {
		t.Fatalf("the live machine: %v; want t1 committed once, never aborted", res.calls)
	}

	qres := newKV()
	q, err := NewParticipant(cfg, multiKV{qres})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := q.Restore(r); err != nil {
			t.Fatalf("replay of its own log: %v", err)
		}
	}
	if b, ok := q.Branch("t1"); !ok || b != BranchAborted {
		t.Fatalf("replayed: %+v, %v; want t1 remembered as aborted", b, ok)
	}
	if qres.calls["commit t1"] != 1 || qres.calls["abort t1"] != 0 {
		t.Fatalf("replayed Resource: %v; want t1 committed once, never aborted", qres.calls)
	}
	// Without retention nothing is forgotten: the same log is refused.
	cfg.Retention = 0
	z, err := NewParticipant(cfg, multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	for _, r := range l.recs {
		if rerr = z.Restore(r); rerr != nil {
			break
		}
	}
	if rerr == nil {
		t.Fatal("without retention, ABORTED after COMMITTED of the same attempt was accepted")
	}
}

// replayKV is a kv with a replay prepare of its own (ReplayPreparer).
type replayKV struct{ *kv }

func (r replayKV) ReplayPrepare(tx string, _ uint32, op []byte) error {
	r.calls["replay "+tx]++
	return r.kv.Prepare(tx, op)
}

// TestRestoreUsesReplayPrepare: a PREPARED record restored into a machine
// whose Resource has ReplayPrepare goes through it, not Prepare, and the
// branch is in doubt with its locks taken as after a Prepare; a Resource
// without one is prepared as before.
func TestRestoreUsesReplayPrepare(t *testing.T) {
	var l memLog
	cfg := testPartConfig("a")
	p, err := NewParticipant(cfg, newKV())
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)

	res := newKV()
	q, err := NewParticipant(cfg, replayKV{res})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := q.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	if res.calls["replay t1"] != 1 || res.calls["prepare t1"] != 1 || res.prepared["t1"] == "" {
		t.Fatalf("calls %v, prepared %v: want t1 prepared once, through ReplayPrepare", res.calls, res.prepared)
	}
	if b, ok := q.Branch("t1"); !ok || b != BranchPrepared || q.InDoubt() != 1 {
		t.Fatalf("t1 after replay: %v %v, in doubt %d", b, ok, q.InDoubt())
	}

	plain := newKV()
	r, err := NewParticipant(cfg, plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range l.recs {
		if err := r.Restore(rec); err != nil {
			t.Fatal(err)
		}
	}
	if plain.calls["prepare t1"] != 1 || plain.calls["replay t1"] != 0 {
		t.Fatalf("a Resource without ReplayPrepare: calls %v", plain.calls)
	}
}
