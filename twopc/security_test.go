package twopc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Tests of the rules that keep one misbehaving peer (or a forged message
// that got past the transport) from doing more than it should: the epoch
// step bound, the op checked before the epoch rises, a participant speaking
// only of its own branches, and the presumed-abort budget.

func onlyVote(t *testing.T, rd Ready, tx string, want Vote) Message {
	t.Helper()
	v := msgsOf(rd, MsgVote)
	if len(v) != 1 || v[0].Tx != tx || v[0].Vote != want {
		t.Fatalf("want one %s vote for %s, got %v", want, tx, v)
	}
	return v[0]
}

func TestParticipantIgnoresEpochTooFarAhead(t *testing.T) {
	var l memLog
	res := newKV()
	p := mustPart(t, "a", &l, res)
	p.Step(prepareMsg("t1", "a", "k1", 3))
	onlyVote(t, take(&l, p), "t1", VoteYes)

	far := uint64(3 + MaxEpochStep + 1)
	// A PREPARE that far ahead is ignored: no vote, no branch, no locks.
	p.Step(prepareMsg("t2", "a", "k2", far))
	rd := take(&l, p)
	if len(rd.Messages) != 0 || hasRecord(rd, RecPrepared) || hasRecord(rd, RecVotedNo) {
		t.Fatalf("a PREPARE with epoch %d (max 3) must be ignored: %+v", far, rd)
	}
	if _, ok := p.Branch("t2"); ok {
		t.Fatal("the ignored PREPARE left a branch")
	}
	// So is an ABORT or a COMMIT: the prepared branch is untouched.
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: far})
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: ^uint64(0)})
	rd = take(&l, p)
	if len(rd.Messages) != 0 || hasRecord(rd, RecAborted) || hasRecord(rd, RecCommitted) {
		t.Fatalf("an ABORT or COMMIT far ahead must be ignored: %+v", rd)
	}
	if st, _ := p.Branch("t1"); st != BranchPrepared || res.aborted["t1"] || res.committed["t1"] != "" {
		t.Fatalf("t1 is %s after ignored messages", st)
	}
	// None of them raised the epoch: an honest PREPARE at the current
	// epoch still prepares, and its YES carries epoch 3.
	p.Step(prepareMsg("t3", "a", "k3", 3))
	if v := onlyVote(t, take(&l, p), "t3", VoteYes); v.Epoch != 3 {
		t.Fatalf("the YES carries epoch %d, want 3", v.Epoch)
	}
	// The bound is inclusive: exactly MaxEpochStep ahead is a new
	// coordinator incarnation, and is believed.
	p.Step(prepareMsg("t4", "a", "k4", 3+MaxEpochStep))
	onlyVote(t, take(&l, p), "t4", VoteYes)
	p.Step(prepareMsg("t5", "a", "k5", 3))
	if v := onlyVote(t, take(&l, p), "t5", VoteNo); !strings.Contains(v.Reason, "stale epoch") {
		t.Fatalf("after the epoch rose, an old one is stale: %v", v)
	}
}

func TestParticipantMalformedOpDoesNotRaiseEpoch(t *testing.T) {
	var l memLog
	p := mustPart(t, "a", &l, newKV())
	p.Step(prepareMsg("t1", "a", "k1", 2))
	onlyVote(t, take(&l, p), "t1", VoteYes)

	// A PREPARE whose op the Resource cannot read (multiKV: empty op),
	// from a later epoch: it votes NO, and believes nothing of it.
	p.Step(prepareMsg("bad", "a", "", 9))
	rd := take(&l, p)
	if v := onlyVote(t, rd, "bad", VoteNo); v.Reason != "empty op" || v.Epoch != 2 {
		t.Fatalf("malformed op: vote %v; want NO (empty op) at epoch 2", v)
	}
	if hasRecord(rd, RecPrepared) {
		t.Fatalf("a malformed op prepared: %+v", rd)
	}
	if st, _ := p.Branch("bad"); st != BranchAborted {
		t.Fatalf("bad is %s", st)
	}
	// A PREPARE at the old epoch is not stale.
	p.Step(prepareMsg("t2", "a", "k2", 2))
	if v := onlyVote(t, take(&l, p), "t2", VoteYes); v.Epoch != 2 {
		t.Fatalf("YES at epoch %d, want 2", v.Epoch)
	}
	// Nor did it raise the epoch kept in the log (a restart reads it back).
	for _, r := range l.recs {
		if r.Type == RecPrepared && r.Epoch != 2 {
			t.Fatalf("PREPARED with epoch %d: %v", r.Epoch, r)
		}
	}
}

// coordWith returns a started coordinator with cfg and its first Ready taken.
func coordWith(t *testing.T, l *memLog, cfg CoordinatorConfig) *Coordinator {
	t.Helper()
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(l, c)
	return c
}

func nodesOf(msgs []Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.To)
	}
	return out
}

func TestCoordinatorIgnoresWoundFromNonParticipant(t *testing.T) {
	var l memLog
	c := coordWith(t, &l, testCoordConfig())
	if err := c.Propose("t1", branches("k1", "k2")); err != nil { // at a and b
		t.Fatal(err)
	}
	take(&l, c)
	for _, from := range []string{"c", "", CoordinatorID, "A"} {
		c.Step(Message{Type: MsgWound, From: from, To: CoordinatorID, Tx: "t1", Attempt: 1, Reason: DeadlockReasonPrefix + "forged"})
		rd := take(&l, c)
		if len(rd.Messages) != 0 || len(rd.Outcomes) != 0 || hasRecord(rd, RecRestart) || hasRecord(rd, RecAbort) {
			t.Fatalf("WOUND from %q, not a participant of t1, acted: %+v", from, rd)
		}
	}
	if st, _ := c.State("t1"); st != CoordCollecting || c.DeadlockStats().Wounds != 0 {
		t.Fatalf("t1 %s, wounds %d", st, c.DeadlockStats().Wounds)
	}
	// A participant of t1 may wound it.
	c.Step(Message{Type: MsgWound, From: "b", To: CoordinatorID, Tx: "t1", Attempt: 1})
	rd := take(&l, c)
	if c.DeadlockStats().Wounds != 1 || !hasRecord(rd, RecRestart) || fmt.Sprint(nodesOf(msgsOf(rd, MsgAbort))) != "[a b]" {
		t.Fatalf("WOUND from b: wounds %d, %+v", c.DeadlockStats().Wounds, rd)
	}
}

func TestCoordinatorIgnoresInquireFromNonParticipant(t *testing.T) {
	var l memLog
	c := coordWith(t, &l, testCoordConfig())
	c.Propose("t1", branches("k1", "k2"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t1", "b", VoteYes, ""))
	take(&l, c)
	if st, _ := c.State("t1"); st != CoordCommitting {
		t.Fatalf("t1 is %s", st)
	}
	// c holds no branch of t1: it learns nothing, and nothing is decided
	// or remembered for it.
	for _, attempt := range []uint32{0, 1, 2} {
		c.Step(Message{Type: MsgInquire, From: "c", To: CoordinatorID, Tx: "t1", Attempt: attempt})
		rd := take(&l, c)
		if len(rd.Messages) != 0 || hasRecord(rd, RecAbort) || hasRecord(rd, RecAcked) {
			t.Fatalf("INQUIRE from c (attempt %d) about active t1 was answered: %+v", attempt, rd)
		}
	}
	// A participant of t1 is told COMMIT.
	c.Step(Message{Type: MsgInquire, From: "b", To: CoordinatorID, Tx: "t1", Attempt: 1})
	if m := msgsOf(take(&l, c), MsgCommit); len(m) != 1 || m[0].To != "b" {
		t.Fatalf("INQUIRE from b: %v", m)
	}
	// A later attempt restarted: an outsider asking about an earlier
	// attempt is not told ABORT either.
	c.Propose("t2", branches("k1", "k2"))
	take(&l, c)
	c.Step(Message{Type: MsgWound, From: "a", To: CoordinatorID, Tx: "t2", Attempt: 1})
	take(&l, c)
	c.Step(Message{Type: MsgInquire, From: "c", To: CoordinatorID, Tx: "t2", Attempt: 1})
	if rd := take(&l, c); len(rd.Messages) != 0 {
		t.Fatalf("INQUIRE from c about attempt 1 of t2: %+v", rd)
	}
	c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "t2", Attempt: 1})
	if m := msgsOf(take(&l, c), MsgAbort); len(m) != 1 || m[0].To != "a" {
		t.Fatalf("INQUIRE from a about superseded attempt 1 of t2: %v", m)
	}
}

func TestCoordinatorWaitsOnlyAboutOwnBranches(t *testing.T) {
	waits := func(from string, edges ...[2]string) Message {
		m := Message{Type: MsgWaits, From: from, To: CoordinatorID}
		for _, e := range edges {
			m.Waits = append(m.Waits, Wait{Waiter: e[0], Holder: e[1], Age: 10})
		}
		return m
	}
	setup := func(t *testing.T) (*Coordinator, *memLog) {
		l := &memLog{}
		c := coordWith(t, l, testCoordConfig())
		// t1 at a and b; t2 at a and c. Only a holds branches of both.
		if err := c.Propose("t1", []Branch{{Node: "a", Op: []byte("x")}, {Node: "b", Op: []byte("y")}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Propose("t2", []Branch{{Node: "a", Op: []byte("x")}, {Node: "c", Op: []byte("y")}}); err != nil {
			t.Fatal(err)
		}
		take(l, c)
		c.Tick() // reports must postdate the attempts
		take(l, c)
		return c, l
	}
	noVictim := func(t *testing.T, c *Coordinator, l *memLog, what string) {
		t.Helper()
		rd := take(l, c)
		if c.DeadlockStats().Cycles != 0 || len(rd.Messages) != 0 || hasRecord(rd, RecRestart) || hasRecord(rd, RecAbort) {
			t.Fatalf("%s: a victim was chosen (cycles %d): %+v", what, c.DeadlockStats().Cycles, rd)
		}
	}
	cycle := [][2]string{{"t1", "t2"}, {"t2", "t1"}}

	t.Run("node with branches of neither", func(t *testing.T) {
		c, l := setup(t)
		c.Step(waits("d", cycle...))
		noVictim(t, c, l, "d")
	})
	t.Run("node with a branch of one", func(t *testing.T) {
		c, l := setup(t)
		c.Step(waits("b", cycle...)) // b holds t1 only
		noVictim(t, c, l, "b")
		c.Step(waits("c", cycle...)) // c holds t2 only
		noVictim(t, c, l, "b and c")
		// The same edges split between b and c, each one naming a
		// transaction it does not hold.
		c.Step(waits("b", cycle[0]))
		c.Step(waits("c", cycle[1]))
		noVictim(t, c, l, "split")
	})
	t.Run("node with branches of both", func(t *testing.T) {
		c, l := setup(t)
		c.Step(waits("a", cycle...))
		rd := take(l, c)
		if c.DeadlockStats().Cycles != 1 || !hasRecord(rd, RecRestart) {
			t.Fatalf("a holds both: want the cycle broken: %+v", rd)
		}
	})
	t.Run("honest edges with a forged one", func(t *testing.T) {
		c, l := setup(t)
		c.Propose("t3", []Branch{{Node: "b", Op: []byte("z")}, {Node: "c", Op: []byte("z")}})
		take(l, c)
		c.Tick()
		take(l, c)
		// t1 -> t2 at a is real; t2 -> t1 is claimed by b, which has no
		// branch of t2. With it the merged graph would have a cycle.
		c.Step(waits("a", cycle[0]))
		c.Step(waits("b", cycle[1], [2]string{"t3", "t1"}))
		noVictim(t, c, l, "forged edge")
	})
}

func TestPresumeAbortBudget(t *testing.T) {
	cfg := testCoordConfig()
	cfg.PresumeBudget = 3
	cfg.PresumeWindow = 10
	var l memLog
	c := coordWith(t, &l, cfg)

	ghost := func(from string, i int) Message {
		// INQUIREs and YES votes about unknown ids draw on the same budget.
		if i%2 == 0 {
			return Message{Type: MsgInquire, From: from, To: CoordinatorID, Tx: fmt.Sprintf("ghost-%s-%d", from, i)}
		}
		return Message{Type: MsgVote, From: from, To: CoordinatorID, Tx: fmt.Sprintf("ghost-%s-%d", from, i), Vote: VoteYes}
	}
	// count returns the forced ABORT records and the ABORTs sent to from.
	count := func(rd Ready, from string) (recs, aborts int) {
		for _, r := range rd.Records {
			if r.Type == RecAbort {
				if !r.Force || r.Reason != "presumed abort" {
					t.Fatalf("presumed abort record: %v", r)
				}
				recs++
			}
		}
		for _, m := range msgsOf(rd, MsgAbort) {
			if m.To != from {
				t.Fatalf("ABORT to %s, want %s", m.To, from)
			}
			aborts++
		}
		return
	}

	for i := range 8 {
		c.Step(ghost("a", i))
	}
	if recs, aborts := count(take(&l, c), "a"); recs != 3 || aborts != 3 || c.Shed() != 5 {
		t.Fatalf("8 unknown ids from a, budget 3: %d records, %d ABORTs, shed %d; want 3, 3, 5", recs, aborts, c.Shed())
	}
	for i := range 3 {
		if st, ok := c.State(fmt.Sprintf("ghost-a-%d", i)); !ok || st != CoordAborted {
			t.Fatalf("ghost-a-%d: %s %v", i, st, ok)
		}
	}
	if _, ok := c.State("ghost-a-3"); ok {
		t.Fatal("a shed id was remembered")
	}
	// An id already presumed aborted is answered again from memory: no
	// new record, no budget spent.
	c.Step(ghost("a", 0))
	if recs, aborts := count(take(&l, c), "a"); recs != 0 || aborts != 1 || c.Shed() != 5 {
		t.Fatalf("known ghost again: %d records, %d ABORTs, shed %d", recs, aborts, c.Shed())
	}
	// The budget is per participant: b has its own.
	for i := range 4 {
		c.Step(ghost("b", i))
	}
	if recs, aborts := count(take(&l, c), "b"); recs != 3 || aborts != 3 || c.Shed() != 6 {
		t.Fatalf("b: %d records, %d ABORTs, shed %d; want 3, 3, 6", recs, aborts, c.Shed())
	}
	// Real transactions are untouched by a spent budget.
	c.Propose("t1", branches("k1"))
	take(&l, c)
	c.Step(vote("t1", "a", VoteYes, ""))
	if rd := take(&l, c); len(rd.Outcomes) != 1 || !rd.Outcomes[0].Committed {
		t.Fatalf("t1: %+v", rd)
	}
	// Within the window, still shed.
	for range cfg.PresumeWindow - 1 {
		c.Tick()
	}
	take(&l, c)
	c.Step(ghost("a", 8))
	if recs, _ := count(take(&l, c), "a"); recs != 0 || c.Shed() != 7 {
		t.Fatalf("before the window ends: %d records, shed %d", recs, c.Shed())
	}
	// The window passes: the budget is there again, and spent again.
	c.Tick()
	take(&l, c)
	for i := 10; i < 15; i++ {
		c.Step(ghost("a", i))
	}
	if recs, aborts := count(take(&l, c), "a"); recs != 3 || aborts != 3 || c.Shed() != 9 {
		t.Fatalf("next window: %d records, %d ABORTs, shed %d; want 3, 3, 9", recs, aborts, c.Shed())
	}
}

func TestValidTxID(t *testing.T) {
	good := []string{
		"t",
		"purchase-42",
		"with space",
		"é-ü-日本",
		"🙂",
		strings.Repeat("x", MaxTxIDBytes),
		strings.Repeat("x", MaxTxIDBytes-2) + "é",
	}
	for _, id := range good {
		if err := ValidTxID(id); err != nil {
			t.Errorf("ValidTxID(%q): %v", id, err)
		}
	}
	bad := []string{
		"",
		strings.Repeat("x", MaxTxIDBytes+1),
		strings.Repeat("x", MaxTxIDBytes-1) + "é", // 257 bytes, 256 runes
		"\xff",
		"ok\xc3",       // truncated UTF-8
		"\xed\xa0\x80", // a surrogate
		"a\x00b",
		"line\nbreak",
		"tab\t",
		"\r",
		"del\x7f",
		"c1\u0085",
		"esc\x1b[31m",
		"bidi\u202eevil",
		"line\u2028sep",
		"para\u2029sep",
		"zero\u200bwidth",
	}
	for _, id := range bad {
		err := ValidTxID(id)
		if err == nil {
			t.Errorf("ValidTxID(%q) accepted", id)
			continue
		}
		if !errors.Is(err, ErrInvalidTx) {
			t.Errorf("ValidTxID(%q): %v does not wrap ErrInvalidTx", id, err)
		}
	}
	// Propose applies it.
	var l memLog
	c := coordWith(t, &l, testCoordConfig())
	for _, id := range bad {
		if err := c.Propose(id, branches("k1")); err == nil {
			t.Errorf("Propose(%q) accepted", id)
		}
	}
	if rd := take(&l, c); len(rd.Messages) != 0 || len(rd.Records) != 0 {
		t.Fatalf("a refused Propose left work: %+v", rd)
	}
}
