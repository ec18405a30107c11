package twopc

import (
	"slices"
	"strings"
	"testing"
)

// One test per rule of forcing and ordering (docs/ARCHITECTURE.md, "The
// ordering rule, once"), driven step by step.

func prepareMsg(tx, to, op string, epoch uint64) Message {
	return Message{Type: MsgPrepare, From: CoordinatorID, To: to, Tx: tx, Epoch: epoch, Op: []byte(op)}
}

func vote(tx, from string, v Vote, reason string) Message {
	return Message{Type: MsgVote, From: from, To: CoordinatorID, Tx: tx, Vote: v, Reason: reason}
}

func branches(ops ...string) []Branch {
	var bs []Branch
	for i, op := range ops {
		bs = append(bs, Branch{Node: []string{"a", "b", "c"}[i], Op: []byte(op)})
	}
	return bs
}

func TestParticipantForcesPreparedBeforeYes(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 1))
	rd := p.Ready()
	if !hasRecord(rd, RecPrepared) || !rd.MustSync() {
		t.Fatalf("YES must ride with a forced PREPARED record: %+v", rd)
	}
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Vote != VoteYes {
		t.Fatalf("want one YES, got %v", v)
	}
	for _, r := range rd.Records {
		if r.Type == RecPrepared && (!r.Force || string(r.Op) != "k1" || r.Epoch != 1) {
			t.Fatalf("PREPARED must be forced and keep op and epoch: %+v", r)
		}
	}
}

func TestCoordinatorForcesCommitBeforeAnyoneHears(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	if err := c.Propose("t1", branches("k1", "k2")); err != nil {
		t.Fatal(err)
	}
	rd := take(&l, c)
	if len(msgsOf(rd, MsgPrepare)) != 2 || rd.MustSync() {
		t.Fatalf("PREPAREs need no sync: %+v", rd)
	}
	c.Step(vote("t1", "a", VoteYes, ""))
	if rd := take(&l, c); len(rd.Messages) != 0 || len(rd.Outcomes) != 0 {
		t.Fatalf("no decision with one vote missing: %+v", rd)
	}
	c.Step(vote("t1", "b", VoteYes, ""))
	rd = c.Ready()
	if !rd.MustSync() || !hasRecord(rd, RecCommit) {
		t.Fatalf("COMMIT must be forced: %+v", rd)
	}
	// The record itself, not only the Ready it came in: the outcome makes
	// this Ready sync anyway, but a COMMIT whose client is gone (or any
	// driver that syncs only forced records) must still be durable before
	// a COMMIT message leaves.
	for _, r := range rd.Records {
		if r.Type == RecCommit && !r.Force {
			t.Fatalf("the COMMIT record is not forced: %+v", r)
		}
	}
	if len(msgsOf(rd, MsgCommit)) != 2 || len(rd.Outcomes) != 1 || !rd.Outcomes[0].Committed {
		t.Fatalf("want COMMIT to both and a committed outcome: %+v", rd)
	}
}

func TestNoVoteAbortsWithoutForceAndSparesTheNoVoter(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2", "k3"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t1", "b", VoteNo, "out of stock"))
	rd := take(&l, c)
	for _, r := range rd.Records {
		if r.Force {
			t.Fatalf("an abort forces nothing: %+v", r)
		}
	}
	aborts := msgsOf(rd, MsgAbort)
	if len(aborts) != 2 || aborts[0].To != "a" || aborts[1].To != "c" {
		t.Fatalf("ABORT goes to the YES voter and the silent one only: %v", aborts)
	}
	if len(rd.Outcomes) != 1 || rd.Outcomes[0].Committed || rd.Outcomes[0].Reason != "b: out of stock" {
		t.Fatalf("outcome: %+v", rd.Outcomes)
	}
	// A late YES from c is told ABORT again; nothing changes.
	c.Step(vote("t1", "c", VoteYes, ""))
	rd = take(&l, c)
	if a := msgsOf(rd, MsgAbort); len(a) != 1 || a[0].To != "c" || len(rd.Outcomes) != 0 {
		t.Fatalf("late YES after abort: %+v", rd)
	}
}

func TestPresumedAbort(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	// An inquiry about a transaction never seen is answered ABORT.
	c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "ghost"})
	rd := take(&l, c)
	if a := msgsOf(rd, MsgAbort); len(a) != 1 || a[0].Tx != "ghost" {
		t.Fatalf("unknown tx must be presumed aborted: %+v", rd)
	}
	// A transaction still collecting votes is pending: no answer.
	c.Propose("t1", branches("k1", "k2"))
	take(&l, c)
	c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "t1"})
	if rd := take(&l, c); len(rd.Messages) != 0 {
		t.Fatalf("a collecting tx is pending, not aborted: %+v", rd)
	}
	// The coordinator crashes before deciding; BEGIN reached the disk.
	l.durable = len(l.recs)
	c2 := mustCoord(t, &l)
	rd = take(&l, c2)
	if a := msgsOf(rd, MsgAbort); len(a) != 2 {
		t.Fatalf("restart must abort the undecided tx at every named participant: %+v", rd)
	}
	if len(rd.Outcomes) != 1 || !rd.Outcomes[0].Recovered || rd.Outcomes[0].Committed {
		t.Fatalf("outcome: %+v", rd.Outcomes)
	}
	if c2.Epoch() != 2 {
		t.Fatalf("epoch %d, want 2", c2.Epoch())
	}
}

func TestDecisionIsFinal(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t1", "b", VoteYes, ""))
	take(&l, c)
	// A NO arriving after the decision (a confused duplicate) changes nothing.
	c.Step(vote("t1", "b", VoteNo, "late"))
	if rd := take(&l, c); len(rd.Outcomes) != 0 || len(msgsOf(rd, MsgAbort)) != 0 {
		t.Fatalf("nothing may turn COMMIT into ABORT: %+v", rd)
	}
	// The prepare timeout passing is no reason to abort either; the
	// commit phase keeps resending COMMIT to whoever has not ACKed.
	c.Step(Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: "t1"})
	take(&l, c)
	resends := 0
	for i := 0; i < 100; i++ {
		c.Tick()
		rd := take(&l, c)
		if len(msgsOf(rd, MsgAbort)) > 0 || len(rd.Outcomes) > 0 {
			t.Fatalf("tick after COMMIT: %+v", rd)
		}
		for _, m := range msgsOf(rd, MsgCommit) {
			if m.To != "b" {
				t.Fatalf("resent COMMIT to %s, which ACKed", m.To)
			}
			resends++
		}
	}
	if resends < 5 || resends > 60 {
		t.Fatalf("%d resends in 100 ticks; want backoff between 2 and 8 ticks", resends)
	}
	// Across a restart too.
	c2 := mustCoord(t, &l)
	rd := take(&l, c2)
	if m := msgsOf(rd, MsgCommit); len(m) != 1 || m[0].To != "b" {
		t.Fatalf("restart must resume the commit phase for b only: %+v", rd)
	}
	if st, _ := c2.State("t1"); st != CoordCommitting {
		t.Fatalf("state %v", st)
	}
	c2.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: "t1"})
	rd = take(&l, c2)
	if !hasRecord(rd, RecEnd) {
		t.Fatalf("last ACK writes END: %+v", rd)
	}
	if st, _ := c2.State("t1"); st != CoordCommitted {
		t.Fatalf("state %v", st)
	}
}

func TestPrepareTimeoutAborts(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	take(&l, c)
	for i := 0; i < 9; i++ {
		c.Tick()
		if rd := take(&l, c); len(rd.Outcomes) > 0 {
			t.Fatalf("aborted early at tick %d", i+1)
		}
	}
	c.Tick()
	rd := take(&l, c)
	if len(rd.Outcomes) != 1 || rd.Outcomes[0].Committed || !strings.Contains(rd.Outcomes[0].Reason, "prepare timeout: b did not vote") {
		t.Fatalf("want a prepare-timeout abort naming b: %+v", rd.Outcomes)
	}
	if a := msgsOf(rd, MsgAbort); len(a) != 2 {
		t.Fatalf("both participants must hear ABORT: %v", a)
	}
	// b's vote arrives late: it is told ABORT.
	c.Step(vote("t1", "b", VoteYes, ""))
	if a := msgsOf(take(&l, c), MsgAbort); len(a) != 1 || a[0].To != "b" {
		t.Fatalf("late YES must get ABORT: %v", a)
	}
}

func TestDuplicateSubmissionRunsOnce(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1"))
	c.Propose("t1", branches("k1")) // while collecting
	rd := take(&l, c)
	if n := len(msgsOf(rd, MsgPrepare)); n != 1 {
		t.Fatalf("%d PREPAREs for one transaction id", n)
	}
	c.Step(vote("t1", "a", VoteYes, ""))
	rd = take(&l, c)
	if len(rd.Outcomes) != 2 || rd.Outcomes[0].Duplicate || !rd.Outcomes[1].Duplicate || !rd.Outcomes[1].Committed {
		t.Fatalf("want the first outcome twice, the second marked duplicate: %+v", rd.Outcomes)
	}
	// After it finished, and after a restart.
	c.Step(Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: "t1"})
	take(&l, c)
	c2 := mustCoord(t, &l)
	take(&l, c2)
	c2.Propose("t1", branches("k1"))
	rd = take(&l, c2)
	if len(rd.Messages) != 0 || len(rd.Outcomes) != 1 || !rd.Outcomes[0].Duplicate || !rd.Outcomes[0].Committed {
		t.Fatalf("a resubmission after restart gets the first outcome: %+v", rd)
	}
}

func TestParticipantIdempotency(t *testing.T) {
	var l memLog
	res := newKV()
	p := mustPart(t, "a", &l, res)
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	// Duplicate PREPARE: same vote, nothing logged twice.
	p.Step(prepareMsg("t1", "a", "k1", 1))
	rd := take(&l, p)
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Vote != VoteYes || hasRecord(rd, RecPrepared) {
		t.Fatalf("duplicate PREPARE: %+v", rd)
	}
	// COMMIT twice: applied once, ACKed twice; COMMITTED is forced before
	// the ACK (see TestParticipantCommittedForcedBeforeAck).
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	rd = take(&l, p)
	if !rd.MustSync() || !hasRecord(rd, RecCommitted) || len(msgsOf(rd, MsgAck)) != 1 {
		t.Fatalf("COMMIT: %+v", rd)
	}
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	rd = take(&l, p)
	if len(msgsOf(rd, MsgAck)) != 1 || hasRecord(rd, RecCommitted) || len(res.committed) != 1 {
		t.Fatalf("duplicate COMMIT: %+v", rd)
	}
	// ABORT after COMMIT is refused, never applied.
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	take(&l, p)
	if st, _ := p.Branch("t1"); st != BranchCommitted || res.aborted["t1"] {
		t.Fatalf("ABORT undid a commit")
	}
}

func TestAbortBeforePrepareIsRemembered(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1, Reason: "timeout"})
	if rd := take(&l, p); !hasRecord(rd, RecAborted) {
		t.Fatalf("ABORT of an unknown tx must be remembered: %+v", rd)
	}
	// The PREPARE overtaken by the ABORT arrives: NO, no hanging branch.
	p.Step(prepareMsg("t1", "a", "k1", 1))
	rd := take(&l, p)
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Vote != VoteNo {
		t.Fatalf("late PREPARE after ABORT must vote NO: %+v", rd)
	}
	if held, waiting := p.Locks().Len(); held+waiting != 0 {
		t.Fatalf("late PREPARE took locks")
	}
	// Also after a restart (the ABORTED record was made durable by a later sync).
	l.durable = len(l.recs)
	p2 := mustPart(t, "a", &l, newKV())
	p2.Step(prepareMsg("t1", "a", "k1", 1))
	if v := msgsOf(take(&l, p2), MsgVote); len(v) != 1 || v[0].Vote != VoteNo {
		t.Fatalf("after restart: %v", v)
	}
}

func TestCommitForUnpreparedBranchIsRefused(t *testing.T) {
	var l memLog
	res := newKV()
	p := mustPart(t, "a", &l, res)
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t9", Epoch: 1})
	rd := take(&l, p)
	if len(msgsOf(rd, MsgAck)) != 0 || len(res.committed) != 0 || !hasRecord(rd, RecEvent) {
		t.Fatalf("COMMIT without PREPARED must be refused and logged: %+v", rd)
	}
}

func TestStaleEpochPrepareVotesNo(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 3))
	take(&l, p)
	p.Step(prepareMsg("t2", "a", "k2", 2)) // from a coordinator incarnation that is gone
	rd := take(&l, p)
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Vote != VoteNo || !strings.Contains(v[0].Reason, "stale epoch") {
		t.Fatalf("stale PREPARE: %+v", rd)
	}
}

func TestInDoubtAfterParticipantCrash(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p) // PREPARED durable, YES sent
	p.Step(prepareMsg("t2", "a", "k2", 1))
	rd := p.Ready()
	// Crash after t2's record was written but before it was synced.
	l.recs = append(l.recs, rd.Records...)
	l.crash()
	res := newKV()
	p2 := mustPart(t, "a", &l, res)
	rd = take(&l, p2)
	if q := msgsOf(rd, MsgInquire); len(q) != 1 || q[0].Tx != "t1" {
		t.Fatalf("restart must ask about t1 (and know nothing of t2): %+v", rd)
	}
	if _, ok := res.prepared["t1"]; !ok || p2.InDoubt() != 1 {
		t.Fatalf("t1 must be prepared again after replay")
	}
	// Its locks are held again before any new PREPARE is served.
	p2.Step(prepareMsg("t3", "a", "k1", 1))
	if rd := take(&l, p2); len(msgsOf(rd, MsgVote)) != 0 {
		t.Fatalf("t3 must wait for k1 held by in-doubt t1: %+v", rd)
	}
	// No answer yet: it keeps asking, with backoff.
	asks := 0
	for i := 0; i < 100; i++ {
		p2.Tick()
		asks += len(msgsOf(take(&l, p2), MsgInquire))
	}
	if asks < 2 || asks > 6 {
		t.Fatalf("%d inquiries in 100 ticks", asks)
	}
	// The answer arrives: t1 commits, and t3 (which timed out on the lock
	// meanwhile) voted NO.
	p2.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 2})
	rd = take(&l, p2)
	if len(msgsOf(rd, MsgAck)) != 1 || p2.InDoubt() != 0 {
		t.Fatalf("commit after restart: %+v", rd)
	}
}

func TestLockWaitAndRelease(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	p.Step(prepareMsg("t2", "a", "k1", 1))
	if rd := take(&l, p); len(rd.Messages) != 0 {
		t.Fatalf("t2 must wait: %+v", rd)
	}
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	rd := take(&l, p)
	// t1's COMMITTED precedes t2's PREPARED in the log: a prefix of the
	// log never shows t2 holding what t1 had not released.
	var order []RecType
	for _, r := range rd.Records {
		order = append(order, r.Type)
	}
	if len(order) != 2 || order[0] != RecCommitted || order[1] != RecPrepared {
		t.Fatalf("record order %v", order)
	}
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Tx != "t2" || v[0].Vote != VoteYes {
		t.Fatalf("t2 must prepare once t1 releases: %+v", rd)
	}
}

func TestLockTimeoutVotesNo(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 1))
	take(&l, p)
	p.Step(prepareMsg("t2", "a", "k1", 1))
	take(&l, p)
	var rd Ready
	for i := 0; i < 5; i++ {
		p.Tick()
		rd = take(&l, p)
	}
	v := msgsOf(rd, MsgVote)
	if len(v) != 1 || v[0].Tx != "t2" || v[0].Vote != VoteNo || !strings.Contains(v[0].Reason, "lock timeout") || !strings.Contains(v[0].Reason, "held by t1") {
		t.Fatalf("want t2 NO for lock timeout naming t1: %+v", rd)
	}
	// The prepared t1 is never abandoned by the participant itself.
	for i := 0; i < 100; i++ {
		p.Tick()
		take(&l, p)
	}
	if st, _ := p.Branch("t1"); st != BranchPrepared {
		t.Fatalf("t1 is %v; a YES voter waits for the decision", st)
	}
}

func TestAbortReleasesWaiter(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 1))
	p.Step(prepareMsg("t2", "a", "k1", 1))
	p.Step(prepareMsg("t3", "a", "k1", 1))
	take(&l, p)
	// ABORT of the waiting t2 drops it from the queue; ABORT of t1 lets t3 in.
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t2", Epoch: 1})
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	rd := take(&l, p)
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Tx != "t3" || v[0].Vote != VoteYes {
		t.Fatalf("want t3 prepared: %+v", rd)
	}
}

func TestReadOnlySkipsPhaseTwo(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteReadOnly, ""))
	c.Step(vote("t1", "b", VoteYes, ""))
	rd := take(&l, c)
	if m := msgsOf(rd, MsgCommit); len(m) != 1 || m[0].To != "b" {
		t.Fatalf("COMMIT only to the YES voter: %+v", rd)
	}
	c.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: "t1"})
	if rd := take(&l, c); !hasRecord(rd, RecEnd) {
		t.Fatalf("END after the only ACK owed: %+v", rd)
	}
}

func TestRestoreRejectsImpossibleLogs(t *testing.T) {
	c, _ := NewCoordinator(testCoordConfig())
	if err := c.Restore(Record{Type: RecBegin, Tx: "t1", Nodes: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(Record{Type: RecCommit, Tx: "t1", Nodes: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(Record{Type: RecAbort, Tx: "t1"}); err == nil {
		t.Fatal("ABORT after COMMIT must not replay")
	}
	p, _ := NewParticipant(testPartConfig("a"), newKV())
	if err := p.Restore(Record{Type: RecCommitted, Tx: "t1"}); err == nil {
		t.Fatal("COMMITTED without PREPARED must not replay")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	r := Record{Type: RecCommit, Tx: "tx-ü", Node: "n", Epoch: 7, Vote: VoteNo, Reason: "why", Nodes: []string{"a", "b"}, Op: []byte{0, 1, 2}, Attempt: 3}
	got, err := DecodeRecord(r.Type, AppendRecord(nil, &r))
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != r.String() || string(got.Op) != string(r.Op) {
		t.Fatalf("round trip: %v != %v", got, r)
	}
	b := AppendRecord(nil, &r)
	for i := 0; i < len(b); i++ {
		if _, err := DecodeRecord(r.Type, b[:i]); err == nil {
			t.Fatalf("truncation at %d decoded", i)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r := Record{Type: RecPrepared, Tx: "t1", Epoch: 3, Op: []byte("op"), Nodes: []string{"x"}}
	f.Add(uint8(RecPrepared), AppendRecord(nil, &r))
	f.Add(uint8(RecCommit), []byte{1, 0, 0, 0, 0, 0, 255, 255, 255, 255, 15})
	r2 := Record{Type: RecRestart, Tx: "t1", Nodes: []string{"a", "b"}, Reason: "deadlock: cycle", Attempt: 2}
	f.Add(uint8(RecRestart), AppendRecord(nil, &r2))
	f.Add(uint8(RecPrepared), []byte{1, 2, 't', '1', 0, 3, 0, 0, 0, 2, 'o', 'p'}) // version 1
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		rec, err := DecodeRecord(RecType(typ), data)
		if err != nil {
			return
		}
		again, err := DecodeRecord(rec.Type, AppendRecord(nil, &rec))
		if err != nil || again.String() != rec.String() {
			t.Fatalf("re-encode: %v %v", again, err)
		}
	})
}

func TestRestartNoticeResendsPrepare(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	c.Propose("t2", branches("k3", "k4"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t2", "b", VoteYes, ""))
	take(&l, c)
	// b comes back from a crash: t1's PREPARE to b (no vote yet) is sent
	// again, with its op; t2, whose YES from b is in, is left alone.
	c.Step(Message{Type: MsgRestarted, From: "b", To: CoordinatorID})
	rd := take(&l, c)
	m := msgsOf(rd, MsgPrepare)
	if len(m) != 1 || m[0].Tx != "t1" || m[0].To != "b" || string(m[0].Op) != "k2" || len(rd.Outcomes) != 0 {
		t.Fatalf("want t1's PREPARE resent to b: %+v", rd)
	}
	// A participant announces its restarts (not its first start).
	var pl memLog
	p := mustPart(t, "a", &pl, newKV())
	if m := msgsOf(take(&pl, p), MsgRestarted); len(m) != 0 {
		t.Fatalf("a fresh participant has nothing to announce")
	}
	p.Step(prepareMsg("t9", "a", "k9", 1))
	take(&pl, p)
	p = mustPart(t, "a", &pl, newKV())
	if m := msgsOf(take(&pl, p), MsgRestarted); len(m) != 1 {
		t.Fatalf("a participant's Start from a log must announce the restart")
	}
}

// TestParticipantCommittedForcedBeforeAck: COMMITTED is forced in the
// Ready that carries the ACK, so once the coordinator has an ACK (and may
// END and later forget the transaction) the branch's outcome is durable
// and a crash cannot put it back in doubt. A crash before that Ready is
// carried out loses both the record and the ACK: the branch is in doubt,
// keeps its locks, asks, and the coordinator (still COMMITTING: no ACK
// came) answers COMMIT; it commits exactly once.
func TestParticipantCommittedForcedBeforeAck(t *testing.T) {
	var cl, pl memLog
	c := mustCoord(t, &cl)
	take(&cl, c)
	res := newKV()
	p := mustPart(t, "a", &pl, res)
	if err := c.Propose("t1", []Branch{{Node: "a", Op: []byte("k1")}}); err != nil {
		t.Fatal(err)
	}
	prep := msgsOf(take(&cl, c), MsgPrepare)
	p.Step(prep[0])
	c.Step(msgsOf(take(&pl, p), MsgVote)[0])
	commit := msgsOf(take(&cl, c), MsgCommit)
	p.Step(commit[0])
	rd := p.Ready()
	if !rd.MustSync() || !hasRecord(rd, RecCommitted) || len(msgsOf(rd, MsgAck)) != 1 {
		t.Fatalf("COMMITTED must be forced with the ACK: %+v", rd)
	}
	// Crash with that Ready not carried out: no record, no ACK.
	pl.crash()
	cl.crash()
	c = mustCoord(t, &cl)
	take(&cl, c)
	if st, _ := c.State("t1"); st != CoordCommitting {
		t.Fatalf("coordinator: %v, want COMMITTING (no ACK came)", st)
	}
	res2 := newKV()
	p = mustPart(t, "a", &pl, res2)
	if p.InDoubt() != 1 {
		t.Fatalf("the branch must be in doubt, got %d in doubt", p.InDoubt())
	}
	// A conflicting PREPARE waits: the in-doubt branch holds its lock.
	p.Step(prepareMsg("t2", "a", "k1", 2))
	// It asked at Start, and asks again when the new coordinator
	// incarnation's first PREPARE shows its epoch.
	inq := msgsOf(take(&pl, p), MsgInquire)
	if len(inq) == 0 || slices.ContainsFunc(inq, func(m Message) bool { return m.Tx != "t1" }) {
		t.Fatalf("want inquiries for t1 only, got %v", inq)
	}
	c.Step(inq[len(inq)-1])
	ans := msgsOf(take(&cl, c), MsgCommit)
	if len(ans) != 1 {
		t.Fatalf("inquiry must be answered COMMIT, got %v", ans)
	}
	p.Step(ans[0])
	rd = take(&pl, p)
	if res2.committed["t1"] != "k1" || len(res2.committed) != 1 {
		t.Fatalf("t1 must commit exactly once after the inquiry: %v", res2.committed)
	}
	if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Tx != "t2" || v[0].Vote != VoteYes {
		t.Fatalf("t2 must get the lock and vote YES once t1 committed: %+v", rd)
	}
	// The ACK's Ready was synced: a crash now keeps COMMITTED.
	c.Step(msgsOf(rd, MsgAck)[0])
	take(&cl, c)
	pl.crash()
	p = mustPart(t, "a", &pl, newKV())
	if p.InDoubt() != 1 { // t2 only
		t.Fatalf("after a synced COMMITTED only t2 may be in doubt, got %d", p.InDoubt())
	}
}
