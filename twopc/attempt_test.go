package twopc

import (
	"fmt"
	"strings"
	"testing"
)

// Tests of transaction restarts (attempts) that the scenarios in
// testdata/restart_* do not cover: codec compatibility, which aborts are
// restarted, and recovery of the coordinator in the middle of a restart.

// A record of codec version 1 (before attempts) decodes as attempt 0,
// which every machine reads as attempt 1.
func TestCodecVersion1DecodesAsAttemptZero(t *testing.T) {
	r := Record{Type: RecPrepared, Tx: "t1", Epoch: 3, Op: []byte("k1")}
	v2 := AppendRecord(nil, &r)
	// Version 1 is version 2 without the trailing attempt (0: one byte).
	v1 := append([]byte{1}, v2[1:len(v2)-1]...)
	got, err := DecodeRecord(RecPrepared, v1)
	if err != nil {
		t.Fatalf("version 1 record: %v", err)
	}
	if got.Attempt != 0 || got.Tx != "t1" || string(got.Op) != "k1" || got.Epoch != 3 {
		t.Fatalf("version 1 record decoded as %v", got)
	}
	if AttemptOf(got.Attempt) != 1 {
		t.Fatalf("attempt 0 must read as attempt 1")
	}
	// A version 2 record with its attempt round-trips; version 1 bytes with
	// a trailing attempt are trailing garbage.
	r.Attempt = 300
	got, err = DecodeRecord(RecPrepared, AppendRecord(nil, &r))
	if err != nil || got.Attempt != 300 {
		t.Fatalf("version 2 round trip: %v %v", got, err)
	}
	bad := append([]byte{1}, AppendRecord(nil, &r)[1:]...)
	if _, err := DecodeRecord(RecPrepared, bad); err == nil {
		t.Fatalf("version 1 payload with trailing bytes decoded")
	}
	// An old participant log replays: PREPARED (v1), COMMITTED (v1).
	c := Record{Type: RecCommitted, Tx: "t1"}
	cv2 := AppendRecord(nil, &c)
	cv1 := append([]byte{1}, cv2[1:len(cv2)-1]...)
	p, _ := NewParticipant(testPartConfig("a"), newKV())
	for _, rec := range []struct {
		typ RecType
		b   []byte
	}{{RecPrepared, v1}, {RecCommitted, cv1}} {
		r, err := DecodeRecord(rec.typ, rec.b)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Restore(r); err != nil {
			t.Fatalf("old log does not replay: %v", err)
		}
	}
	if st, _ := p.Branch("t1"); st != BranchCommitted {
		t.Fatalf("old log replays to %v", st)
	}
}

// Only deadlock victims are restarted: a NO vote is restarted only when its
// reason is a deadlock's (a local cycle's victim); lock timeouts, business
// NOs and prepare timeouts are reported. MaxAttempts 1 restarts nothing.
func TestWhichAbortsRestart(t *testing.T) {
	for _, tc := range []struct {
		reason      string
		maxAttempts int
		restart     bool
	}{
		{"deadlock: local cycle t1->t2->t1; victim t2 (youngest)", 0, true},
		{"deadlock: local cycle t1->t2->t1; victim t2 (youngest)", 1, false},
		{"lock timeout after 5 ticks waiting for k held by t0", 0, false},
		{"business rule says no", 0, false},
		{"insufficient stock: deadlock: is not a prefix here", 0, false},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.reason, tc.maxAttempts), func(t *testing.T) {
			var l memLog
			cfg := testCoordConfig()
			cfg.MaxAttempts = tc.maxAttempts
			c, err := NewCoordinator(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.Start()
			take(&l, c)
			c.Propose("t1", branches("k1", "k2"))
			first := msgsOf(take(&l, c), MsgPrepare)
			c.Step(vote("t1", "a", VoteYes, ""))
			c.Step(vote("t1", "b", VoteNo, tc.reason))
			rd := take(&l, c)
			if !tc.restart {
				if len(rd.Outcomes) != 1 || rd.Outcomes[0].Committed || !hasRecord(rd, RecAbort) || hasRecord(rd, RecRestart) {
					t.Fatalf("want the abort reported, no restart: %+v", rd)
				}
				if c.DeadlockStats().Restarts != 0 {
					t.Fatalf("restart counted")
				}
				return
			}
			if len(rd.Outcomes) != 0 || hasRecord(rd, RecAbort) || !hasRecord(rd, RecRestart) {
				t.Fatalf("want a restart and no outcome: %+v", rd)
			}
			if c.DeadlockStats().Restarts != 1 {
				t.Fatalf("Restarts = %d", c.DeadlockStats().Restarts)
			}
			// ABORT of attempt 1 only to the YES voter; PREPARE of attempt 2
			// to both, with the same timestamp and ops.
			ab := msgsOf(rd, MsgAbort)
			if len(ab) != 1 || ab[0].To != "a" || AttemptOf(ab[0].Attempt) != 1 {
				t.Fatalf("want ABORT attempt 1 to a: %+v", ab)
			}
			pr := msgsOf(rd, MsgPrepare)
			if len(pr) != 2 {
				t.Fatalf("want 2 PREPAREs: %+v", pr)
			}
			for i, m := range pr {
				if m.Attempt != 2 || m.TS != first[i].TS || string(m.Op) != string(first[i].Op) {
					t.Fatalf("PREPARE of attempt 2 %+v differs from attempt 1's %+v", m, first[i])
				}
			}
			// The RESTART record is forced before the new PREPAREs leave.
			if !rd.MustSync() {
				t.Fatalf("RESTART must be forced")
			}
			// A vote of attempt 1 no longer counts.
			c.Step(vote("t1", "b", VoteYes, ""))
			if rd := take(&l, c); len(rd.Outcomes) != 0 || hasRecord(rd, RecVoted) {
				t.Fatalf("a vote of attempt 1 counted: %+v", rd)
			}
			for _, n := range []string{"a", "b"} {
				m := vote("t1", n, VoteYes, "")
				m.Attempt = 2
				c.Step(m)
			}
			rd = take(&l, c)
			if len(rd.Outcomes) != 1 || !rd.Outcomes[0].Committed {
				t.Fatalf("attempt 2 should commit: %+v", rd)
			}
			for _, r := range rd.Records {
				if r.Type == RecCommit && r.Attempt != 2 {
					t.Fatalf("COMMIT must name attempt 2: %v", r)
				}
			}
		})
	}
}

// A coordinator that restarts in the middle of a retry presumes abort for
// the current attempt (reported, as a recovered outcome), and tells every
// participant of that attempt; one that restarts after COMMIT of attempt 2
// resumes COMMIT of attempt 2.
func TestCoordinatorRecoversAttempts(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	c.Propose("t2", branches("k3", "k4"))
	take(&l, c)
	for _, tx := range []string{"t1", "t2"} {
		c.Step(Message{Type: MsgWound, From: "a", To: CoordinatorID, Tx: tx, Reason: "deadlock: wounded by older t0"})
	}
	take(&l, c)
	for _, n := range []string{"a", "b"} {
		m := vote("t2", n, VoteYes, "")
		m.Attempt = 2
		c.Step(m)
	}
	take(&l, c)
	l.crash()
	c = mustCoord(t, &l)
	rd := take(&l, c)
	if st, _ := c.State("t2"); st != CoordCommitting {
		t.Fatalf("t2 should be committing after recovery, is %v", st)
	}
	var aborts, commits []Message
	aborts, commits = msgsOf(rd, MsgAbort), msgsOf(rd, MsgCommit)
	if len(aborts) != 2 || aborts[0].Tx != "t1" || aborts[0].Attempt != 2 || aborts[1].Attempt != 2 {
		t.Fatalf("want ABORT of t1's attempt 2 to both participants: %+v", aborts)
	}
	if len(commits) != 2 || commits[0].Tx != "t2" || commits[0].Attempt != 2 {
		t.Fatalf("want COMMIT of t2's attempt 2 resent: %+v", commits)
	}
	if len(rd.Outcomes) != 1 || rd.Outcomes[0].Tx != "t1" || rd.Outcomes[0].Committed || !rd.Outcomes[0].Recovered {
		t.Fatalf("want t1's presumed abort reported as recovered: %+v", rd.Outcomes)
	}
	// Inquiries about t2: attempt 1 aborted, attempt 2 committed.
	c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "t2", Attempt: 1})
	c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "t2", Attempt: 2})
	rd = take(&l, c)
	if len(rd.Messages) != 2 || rd.Messages[0].Type != MsgAbort || rd.Messages[0].Attempt != 1 ||
		rd.Messages[1].Type != MsgCommit || rd.Messages[1].Attempt != 2 {
		t.Fatalf("inquiries: want ABORT attempt 1, COMMIT attempt 2: %+v", rd.Messages)
	}
}

// Logs that cannot happen are refused on replay.
func TestRestoreRejectsImpossibleAttempts(t *testing.T) {
	for _, tc := range []struct {
		name string
		recs []Record
	}{
		{"coordinator COMMIT of an attempt the log never restarted to", []Record{
			{Type: RecBegin, Tx: "t1", Nodes: []string{"a"}},
			{Type: RecCommit, Tx: "t1", Nodes: []string{"a"}, Attempt: 2},
		}},
		{"coordinator RESTART of a stale attempt", []Record{
			{Type: RecBegin, Tx: "t1", Nodes: []string{"a"}},
			{Type: RecRestart, Tx: "t1", Attempt: 1},
			{Type: RecRestart, Tx: "t1", Attempt: 1},
		}},
		{"coordinator RESTART after ABORT", []Record{
			{Type: RecBegin, Tx: "t1", Nodes: []string{"a"}},
			{Type: RecAbort, Tx: "t1"},
			{Type: RecRestart, Tx: "t1", Attempt: 1},
		}},
	} {
		c, _ := NewCoordinator(testCoordConfig())
		var err error
		for _, r := range tc.recs {
			if err = c.Restore(r); err != nil {
				break
			}
		}
		if err == nil {
			t.Errorf("%s: replayed", tc.name)
		}
	}
	for _, tc := range []struct {
		name string
		recs []Record
	}{
		{"participant PREPARED of attempt 2 while attempt 1 is prepared", []Record{
			{Type: RecPrepared, Tx: "t1", Op: []byte("k"), Attempt: 1},
			{Type: RecPrepared, Tx: "t1", Op: []byte("k"), Attempt: 2},
		}},
		{"participant COMMITTED of another attempt", []Record{
			{Type: RecPrepared, Tx: "t1", Op: []byte("k"), Attempt: 2},
			{Type: RecCommitted, Tx: "t1", Attempt: 1},
		}},
		{"participant PREPARED of an attempt already aborted", []Record{
			{Type: RecAborted, Tx: "t1", Attempt: 2},
			{Type: RecPrepared, Tx: "t1", Op: []byte("k"), Attempt: 2},
		}},
	} {
		p, _ := NewParticipant(testPartConfig("a"), newKV())
		var err error
		for _, r := range tc.recs {
			if err = p.Restore(r); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "attempt") {
			t.Errorf("%s: replayed (err %v)", tc.name, err)
		}
	}
}

// attemptKV records the attempts an AttemptResource is told.
type attemptKV struct {
	*kv
	calls []string
}

func (r *attemptKV) PrepareAttempt(tx string, a uint32, op []byte) error {
	r.calls = append(r.calls, fmt.Sprintf("prepare %s/%d", tx, a))
	return r.Prepare(tx, op)
}

func (r *attemptKV) CommitAttempt(tx string, a uint32, op []byte) {
	r.calls = append(r.calls, fmt.Sprintf("commit %s/%d", tx, a))
	r.Commit(tx, op)
}

func (r *attemptKV) AbortAttempt(tx string, a uint32, op []byte) {
	r.calls = append(r.calls, fmt.Sprintf("abort %s/%d", tx, a))
	r.Abort(tx, op)
}

// An AttemptResource is told the attempt of the branch it prepares,
// aborts (the prepared attempt, also when a later attempt supersedes it)
// and commits, live and on replay.
func TestAttemptResourceSeesAttempts(t *testing.T) {
	res := &attemptKV{kv: newKV()}
	p, _ := NewParticipant(testPartConfig("a"), res)
	p.Start()
	p.Step(Message{Type: MsgPrepare, Tx: "t1", Epoch: 1, Op: []byte("k1"), Attempt: 1})
	p.Step(Message{Type: MsgPrepare, Tx: "t1", Epoch: 1, Op: []byte("k1"), Attempt: 2})
	p.Step(Message{Type: MsgCommit, Tx: "t1", Epoch: 1, Attempt: 2})
	var recs []Record
	recs = append(recs, p.Ready().Clone().Records...)
	p.Advance()
	want := "prepare t1/1,abort t1/1,prepare t1/2,commit t1/2"
	if got := strings.Join(res.calls, ","); got != want {
		t.Fatalf("live calls %s, want %s", got, want)
	}
	res2 := &attemptKV{kv: newKV()}
	p2, _ := NewParticipant(testPartConfig("a"), res2)
	for _, r := range recs {
		if err := p2.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(res2.calls, ","); got != want {
		t.Fatalf("replayed calls %s, want %s", got, want)
	}
}

// A prepared branch ignores an ABORT from an older epoch than the one that
// prepared it (a deposed leader of a replicated coordinator, or a message
// of an incarnation before a restart arriving late); the ABORT of its own
// epoch or a later one aborts it.
func TestPreparedIgnoresOlderEpochAbort(t *testing.T) {
	l := &memLog{}
	res := newKV()
	p := mustPart(t, "a", l, res)
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 5, Op: []byte("k1"), Attempt: 1})
	take(l, p)
	if st, _ := p.Branch("t1"); st != BranchPrepared {
		t.Fatalf("t1 is %v after PREPARE", st)
	}
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 4, Attempt: 1})
	take(l, p)
	if st, _ := p.Branch("t1"); st != BranchPrepared {
		t.Fatalf("an ABORT of epoch 4 ended a branch prepared under epoch 5: %v", st)
	}
	// A newer incarnation re-sends the PREPARE: its epoch is the branch's now.
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 6, Op: []byte("k1"), Attempt: 1})
	take(l, p)
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 5, Attempt: 1})
	take(l, p)
	if st, _ := p.Branch("t1"); st != BranchPrepared {
		t.Fatalf("an ABORT of epoch 5 ended a branch PREPAREd again under epoch 6: %v", st)
	}
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 6, Attempt: 1})
	take(l, p)
	if st, _ := p.Branch("t1"); st != BranchAborted {
		t.Fatalf("the ABORT of its own epoch left t1 %v", st)
	}
}

// A branch in doubt asks a new coordinator incarnation about its outcome
// as soon as that incarnation speaks (its first PREPARE with a higher
// epoch), not at the branch's next backed-off inquiry: after a leader of a
// replicated coordinator dies, the branches it prepared learn their
// outcome from the next leader within a round trip of its first message.
// Branches prepared under the new epoch are not asked about.
func TestInDoubtInquiresNewEpochAtOnce(t *testing.T) {
	l := &memLog{}
	res := newKV()
	p := mustPart(t, "a", l, res)
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 5, Op: []byte("k1"), Attempt: 1})
	take(l, p)
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t2", Epoch: 5, Op: []byte("k2"), Attempt: 1})
	if got := msgsOf(take(l, p), MsgInquire); len(got) != 0 {
		t.Fatalf("a PREPARE of the same epoch made it ask: %v", got)
	}
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t3", Epoch: 7, Op: []byte("k3"), Attempt: 1})
	got := msgsOf(take(l, p), MsgInquire)
	var txs []string
	for _, m := range got {
		txs = append(txs, m.Tx)
		if m.Epoch != 7 {
			t.Errorf("inquiry about %s carries epoch %d, want 7", m.Tx, m.Epoch)
		}
	}
	if strings.Join(txs, ",") != "t1,t2" {
		t.Fatalf("inquiries after a PREPARE of epoch 7: %v, want t1,t2", txs)
	}
	p.Step(Message{Type: MsgPrepare, From: CoordinatorID, To: "a", Tx: "t4", Epoch: 8, Op: []byte("k4"), Attempt: 1})
	txs = txs[:0]
	for _, m := range msgsOf(take(l, p), MsgInquire) {
		txs = append(txs, m.Tx)
	}
	if strings.Join(txs, ",") != "t1,t2,t3" {
		t.Fatalf("inquiries after a PREPARE of epoch 8: %v, want t1,t2,t3", txs)
	}
}
