package twopc

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// Rules of heuristic decisions (heuristic.go), one test each.

func commitMsg(tx, to string, attempt uint32) Message {
	return Message{Type: MsgCommit, From: CoordinatorID, To: to, Tx: tx, Epoch: 1, Attempt: attempt}
}

func abortMsg(tx, to string, attempt uint32) Message {
	return Message{Type: MsgAbort, From: CoordinatorID, To: to, Tx: tx, Epoch: 1, Attempt: attempt, Reason: "coordinator says so"}
}

// preparedWithWaiter returns participant a with t1 prepared on key k and
// t2 waiting for k behind it.
func preparedWithWaiter(t *testing.T, l *memLog, res *kv) *Participant {
	t.Helper()
	p := mustPart(t, "a", l, res)
	take(l, p)
	p.Step(prepareMsg("t1", "a", "k", 1))
	p.Step(prepareMsg("t2", "a", "k", 1))
	take(l, p)
	if p.InDoubt() != 1 {
		t.Fatalf("t1 should be in doubt, t2 waiting: in doubt %d", p.InDoubt())
	}
	return p
}

// A forced outcome is a forced record first in its Ready, applies the
// outcome to the Resource, releases the locks (the waiter prepares in the
// same Ready, after the record) and is listed as heuristic.
func TestHeuristicDecisionForcedReleasesLocks(t *testing.T) {
	for _, commit := range []bool{true, false} {
		var l memLog
		res := newKV()
		p := preparedWithWaiter(t, &l, res)
		if err := p.ForceOutcome("t1", commit, "coordinator site lost"); err != nil {
			t.Fatal(err)
		}
		rd := take(&l, p)
		want := RecHeuristicAborted
		if commit {
			want = RecHeuristicCommitted
		}
		if len(rd.Records) == 0 || rd.Records[0].Type != want || !rd.Records[0].Force || rd.Records[0].Reason != "coordinator site lost" {
			t.Fatalf("commit=%v: want a forced %s first, got %v", commit, want, rd.Records)
		}
		if !rd.MustSync() {
			t.Fatal("the Ready of a heuristic decision must sync")
		}
		if commit && (res.committed["t1"] != "k" || res.aborted["t1"]) || !commit && (!res.aborted["t1"] || res.committed["t1"] != "") {
			t.Fatalf("commit=%v: resource committed=%v aborted=%v", commit, res.committed, res.aborted)
		}
		if y := msgsOf(rd, MsgVote); len(y) != 1 || y[0].Tx != "t2" || y[0].Vote != VoteYes {
			t.Fatalf("the waiter must get the released lock and vote YES: %v", rd.Messages)
		}
		if p.InDoubt() != 1 || p.InDoubtTxs()[0] != "t2" {
			t.Fatalf("in doubt now: %v", p.InDoubtTxs())
		}
		hs := p.Heuristics()
		if len(hs) != 1 || hs[0].Tx != "t1" || hs[0].Committed != commit || hs[0].Mismatch || hs[0].Attempt != 1 {
			t.Fatalf("heuristics: %+v", hs)
		}
	}
}

func TestHeuristicOnlyInDoubt(t *testing.T) {
	var l memLog
	res := newKV()
	p := preparedWithWaiter(t, &l, res)
	for _, tx := range []string{"t2", "nope"} { // waiting, unknown
		if err := p.ForceOutcome(tx, true, ""); !errors.Is(err, ErrNotInDoubt) {
			t.Fatalf("%s: want ErrNotInDoubt, got %v", tx, err)
		}
	}
	p.Step(commitMsg("t1", "a", 1))
	take(&l, p)
	if err := p.ForceOutcome("t1", false, ""); !errors.Is(err, ErrNotInDoubt) {
		t.Fatalf("a committed branch: want ErrNotInDoubt, got %v", err)
	}
	if len(p.Heuristics()) != 0 || len(p.rd.Records) != 0 {
		t.Fatal("a refused decision must leave nothing behind")
	}
}

// The coordinator's COMMIT after a heuristic ABORT: a forced mismatch
// record and an ACK in the same Ready, the Resource untouched; a copy of
// the COMMIT is ACKed again without a second record.
func TestHeuristicMismatchOnCommit(t *testing.T) {
	var l memLog
	res := newKV()
	p := preparedWithWaiter(t, &l, res)
	p.ForceOutcome("t1", false, "")
	take(&l, p)
	p.Step(commitMsg("t1", "a", 1))
	rd := take(&l, p)
	if len(rd.Records) != 1 || rd.Records[0].Type != RecHeuristicMismatch || !rd.Records[0].Force || rd.Records[0].Vote != VoteYes {
		t.Fatalf("want one forced HEURISTIC_MISMATCH (vote YES = COMMIT): %v", rd.Records)
	}
	if a := msgsOf(rd, MsgAck); len(a) != 1 || a[0].Tx != "t1" || !strings.HasPrefix(a[0].Reason, HeuristicMismatchPrefix) {
		t.Fatalf("the branch must ACK (saying why) so the coordinator can finish: %v", rd.Messages)
	}
	if res.calls["commit t1"] != 0 {
		t.Fatal("a heuristically aborted branch must not be committed")
	}
	h, _ := p.HeuristicOf("t1")
	if !h.Mismatch || h.Coordinator != "COMMIT" || p.HeuristicStats().Mismatches != 1 {
		t.Fatalf("mismatch not reported: %+v %+v", h, p.HeuristicStats())
	}
	p.Step(commitMsg("t1", "a", 1))
	rd = take(&l, p)
	if len(rd.Records) != 0 || len(msgsOf(rd, MsgAck)) != 1 {
		t.Fatalf("a duplicate COMMIT is ACKed, not recorded again: %+v", rd)
	}
}

// The coordinator's ABORT after a heuristic COMMIT (of the same attempt,
// or of a later one: the committed attempt was aborted before the
// restart): a forced mismatch, no ACK, no abort of the Resource.
func TestHeuristicMismatchOnAbort(t *testing.T) {
	for _, attempt := range []uint32{1, 2} {
		var l memLog
		res := newKV()
		p := preparedWithWaiter(t, &l, res)
		p.ForceOutcome("t1", true, "")
		take(&l, p)
		p.Step(abortMsg("t1", "a", attempt)) // kv panics on an abort of a committed branch
		rd := take(&l, p)
		if len(rd.Records) != 1 || rd.Records[0].Type != RecHeuristicMismatch || !rd.Records[0].Force || rd.Records[0].Vote != VoteNo {
			t.Fatalf("attempt %d: want one forced HEURISTIC_MISMATCH (vote NO = ABORT): %v", attempt, rd.Records)
		}
		if len(rd.Messages) != 0 {
			t.Fatalf("an ABORT is not ACKed: %v", rd.Messages)
		}
		if h, _ := p.HeuristicOf("t1"); !h.Mismatch || h.Coordinator != "ABORT" {
			t.Fatalf("mismatch not reported: %+v", h)
		}
	}
}

// The same outcome from the coordinator: no mismatch; a COMMIT is ACKed.
func TestHeuristicAgreement(t *testing.T) {
	var l memLog
	res := newKV()
	p := preparedWithWaiter(t, &l, res)
	p.ForceOutcome("t1", true, "")
	take(&l, p)
	p.Step(commitMsg("t1", "a", 1))
	rd := take(&l, p)
	if len(rd.Records) != 0 || len(msgsOf(rd, MsgAck)) != 1 || res.calls["commit t1"] != 1 {
		t.Fatalf("agreeing COMMIT: want an ACK and nothing else: %+v (commits %d)", rd, res.calls["commit t1"])
	}
	if h, _ := p.HeuristicOf("t1"); h.Mismatch || h.Coordinator != "COMMIT" {
		t.Fatalf("agreement: %+v", h)
	}

	var l2 memLog
	p = preparedWithWaiter(t, &l2, newKV())
	p.ForceOutcome("t1", false, "")
	take(&l2, p)
	p.Step(abortMsg("t1", "a", 1))
	rd = take(&l2, p)
	if len(rd.Records) != 0 || len(rd.Messages) != 0 {
		t.Fatalf("agreeing ABORT: want nothing: %+v", rd)
	}
	if h, _ := p.HeuristicOf("t1"); h.Mismatch || h.Coordinator != "ABORT" {
		t.Fatalf("agreement: %+v", h)
	}
}

// Replay and snapshots bring heuristic decisions and mismatches back:
// the branch is not in doubt (no inquiry), its lock is free, and a copy of
// the coordinator's decision is not recorded again.
func TestHeuristicRecovered(t *testing.T) {
	var l memLog
	res := newKV()
	p := preparedWithWaiter(t, &l, res)
	p.ForceOutcome("t1", false, "by hand")
	take(&l, p)
	p.Step(commitMsg("t1", "a", 1))
	take(&l, p)
	p.Step(commitMsg("t2", "a", 1))
	take(&l, p)

	check := func(name string, q *Participant) {
		t.Helper()
		var tail memLog
		rd := take(&tail, q)
		if len(msgsOf(rd, MsgInquire)) != 0 || q.InDoubt() != 0 {
			t.Fatalf("%s: a decided branch must not be in doubt: %+v", name, rd)
		}
		h, ok := q.HeuristicOf("t1")
		if !ok || h.Committed || !h.Mismatch || h.Note != "by hand" || h.Coordinator != "COMMIT" {
			t.Fatalf("%s: heuristic lost: %+v %v", name, h, ok)
		}
		q.Step(commitMsg("t1", "a", 1))
		rd = take(&tail, q)
		if len(rd.Records) != 0 || len(msgsOf(rd, MsgAck)) != 1 {
			t.Fatalf("%s: a COMMIT copy after recovery: %+v", name, rd)
		}
		q.Step(prepareMsg("t3", "a", "k", 1))
		if rd := take(&tail, q); len(msgsOf(rd, MsgVote)) != 1 || msgsOf(rd, MsgVote)[0].Vote != VoteYes {
			t.Fatalf("%s: the lock of t1 must be free: %+v", name, rd)
		}
	}
	check("replay", mustPart(t, "a", &l, newKV()))

	snap, err := p.AppendSnapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newKV()
	r.committed = maps.Clone(res.committed)
	q, err := NewParticipant(testPartConfig("a"), multiKV{r})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	q.Start()
	check("snapshot", q)
}

// A heuristic record that does not fit the log is refused on replay.
func TestHeuristicReplayChecks(t *testing.T) {
	p, err := NewParticipant(testPartConfig("a"), multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Restore(Record{Type: RecHeuristicCommitted, Tx: "t1", Attempt: 1}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("heuristic decision without PREPARED: %v", err)
	}
	if err := p.Restore(Record{Type: RecHeuristicMismatch, Tx: "t1", Vote: VoteYes}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("mismatch without a decision: %v", err)
	}
}

// The coordinator keeps the mismatch an ACK reports in its log, once.
func TestCoordinatorLogsHeuristicMismatch(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t1", "b", VoteYes, ""))
	take(&l, c)
	ack := Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: "t1", Attempt: 1, Reason: HeuristicMismatchPrefix + "attempt 1 was heuristically ABORTED here"}
	c.Step(ack)
	rd := take(&l, c)
	if len(rd.Records) != 2 || rd.Records[1].Type != RecEvent || rd.Records[1].Reason != "a: "+ack.Reason {
		t.Fatalf("want ACKED and the mismatch event: %v", rd.Records)
	}
	c.Step(ack)
	if rd := take(&l, c); len(rd.Records) != 0 {
		t.Fatalf("a duplicate ACK logs nothing: %v", rd.Records)
	}
	c.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: "t1", Attempt: 1})
	if rd := take(&l, c); len(rd.Records) != 2 || rd.Records[1].Type != RecEnd {
		t.Fatalf("a plain ACK: ACKED and END only: %v", rd.Records)
	}
}

// A heuristic branch asks the coordinator for its decision, every
// InquireAfter ticks, until it hears it (the coordinator sends an ABORT
// only once).
func TestHeuristicInquiresUntilDecided(t *testing.T) {
	var l memLog
	p := preparedWithWaiter(t, &l, newKV())
	p.ForceOutcome("t1", true, "")
	take(&l, p)
	p.Step(commitMsg("t2", "a", 1)) // t2 decided: only t1 is left to ask about
	take(&l, p)
	inquiries := func(ticks int) int {
		n := 0
		for range ticks {
			p.Tick()
			for _, m := range msgsOf(take(&l, p), MsgInquire) {
				if m.Tx != "t1" || m.Attempt != 1 {
					t.Fatalf("unexpected inquiry %v", m)
				}
				n++
			}
		}
		return n
	}
	every := int(testPartConfig("a").InquireAfter)
	if n := inquiries(3 * every); n != 3 {
		t.Fatalf("want 3 inquiries in %d ticks, got %d", 3*every, n)
	}
	p.Step(abortMsg("t1", "a", 1))
	take(&l, p)
	if n := inquiries(3 * every); n != 0 {
		t.Fatalf("the decision arrived: want no more inquiries, got %d", n)
	}
}
