package twopc

import "testing"

// TestRestartPause: with RestartBase set, a restarted attempt's PREPAREs
// leave only after the pause (the RESTART record and the old attempt's
// ABORT leave at once), carry the original timestamp, and a coordinator
// that crashes during the pause aborts the transaction and reports it
// (presumed abort: nothing was prepared for the new attempt).
func TestRestartPause(t *testing.T) {
	var l memLog
	cfg := testCoordConfig()
	cfg.RestartBase, cfg.RestartMax = 3, 3
	cfg.PrepareTimeout = 100
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(&l, c)
	if err := c.Propose("t1", branches("k1", "k2")); err != nil {
		t.Fatal(err)
	}
	first := msgsOf(take(&l, c), MsgPrepare)
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(vote("t1", "b", VoteNo, "deadlock: local cycle t1->t9->t1; victim t1 (youngest)"))
	rd := take(&l, c)
	if !hasRecord(rd, RecRestart) || len(msgsOf(rd, MsgAbort)) != 1 || len(msgsOf(rd, MsgPrepare)) != 0 || len(rd.Outcomes) != 0 {
		t.Fatalf("restart: want RESTART and ABORT now, no PREPARE yet, no outcome: %+v", rd)
	}
	for i := 1; i <= 2; i++ {
		c.Tick()
		if p := msgsOf(take(&l, c), MsgPrepare); len(p) != 0 {
			t.Fatalf("PREPARE after %d ticks of a 3-tick pause: %v", i, p)
		}
	}
	c.Tick()
	p := msgsOf(take(&l, c), MsgPrepare)
	if len(p) != 2 {
		t.Fatalf("want the 2 PREPAREs of attempt 2 after the pause, got %v", p)
	}
	for _, m := range p {
		if AttemptOf(m.Attempt) != 2 || m.TS != first[0].TS || m.TS == 0 {
			t.Fatalf("PREPARE %v: want attempt 2 and the original timestamp %d", m, first[0].TS)
		}
	}

	// Again, and crash during the pause this time.
	c.Step(vote("t1", "a", VoteYes, ""))
	c.Step(Message{Type: MsgWound, From: "b", To: CoordinatorID, Tx: "t1", Epoch: 1, Attempt: 2, Reason: "deadlock: wounded by older t0 waiting for k2"})
	rd = take(&l, c)
	if !hasRecord(rd, RecRestart) || len(msgsOf(rd, MsgPrepare)) != 0 {
		t.Fatalf("second restart: %+v", rd)
	}
	l.crash()
	c = mustCoord(t, &l)
	rd = take(&l, c)
	if len(rd.Outcomes) != 1 || rd.Outcomes[0].Committed {
		t.Fatalf("a coordinator restarted during the pause must roll t1 back and say so: %+v", rd)
	}
	for i := 0; i < 10; i++ {
		c.Tick()
		if p := msgsOf(take(&l, c), MsgPrepare); len(p) != 0 {
			t.Fatalf("PREPARE of a rolled-back transaction after recovery: %v", p)
		}
	}
}
