package sim

import (
	"testing"

	"github.com/dtx-dev/dtx/twopc"
)

// TestRegressAllAckedNoEnd: found by the campaign (seeds 192 and 208 of
// its first version, `dtx chaos --seed 192 --runs 1` then): a power loss
// tore the coordinator's log after the last ACKED record and before END.
// Replayed, the transaction was COMMITTING with every branch acked; Start
// resent COMMIT to nobody, no ACK could come, and END was never written:
// the coordinator kept the transaction in flight forever (a liveness
// violation). Recovery must finish it.
func TestRegressAllAckedNoEnd(t *testing.T) {
	nodes := []string{"inventory", "payment", "order"}
	for cut := 0; cut <= len(nodes); cut++ { // how many ACKED records survived
		c, err := twopc.NewCoordinator(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 10, RetryBase: 2, RetryMax: 8})
		if err != nil {
			t.Fatal(err)
		}
		log := []twopc.Record{
			{Type: twopc.RecEpoch, Epoch: 1},
			{Type: twopc.RecBegin, Tx: "t1", Nodes: nodes},
			{Type: twopc.RecCommit, Tx: "t1", Nodes: nodes},
		}
		for _, n := range nodes[:cut] {
			log = append(log, twopc.Record{Type: twopc.RecAcked, Tx: "t1", Node: n})
		}
		for _, r := range log {
			if err := c.Restore(r); err != nil {
				t.Fatal(err)
			}
		}
		c.Start()
		acked := map[string]bool{}
		for _, n := range nodes[:cut] {
			acked[n] = true
		}
		// Participants answer every COMMIT with an ACK, as long as it takes.
		for tick := 0; tick < 200 && c.Inflight() > 0; tick++ {
			rd := c.Ready().Clone()
			c.Advance()
			for _, m := range rd.Messages {
				if m.Type == twopc.MsgCommit {
					c.Step(twopc.Message{Type: twopc.MsgAck, From: m.To, To: twopc.CoordinatorID, Tx: m.Tx, Epoch: m.Epoch})
				}
			}
			c.Tick()
		}
		if st, _ := c.State("t1"); st != twopc.CoordCommitted || c.Inflight() != 0 {
			t.Errorf("%d of %d ACKED records kept: t1 is %v, %d in flight; want COMMITTED and nothing in flight", cut, len(nodes), st, c.Inflight())
		}
	}
}

// okResource is a Resource whose branches always prepare, on distinct keys.
type okResource struct{ committed, aborted map[string]bool }

func (r *okResource) Keys(tx string, _ []byte) ([]string, error) { return []string{"k:" + tx}, nil }
func (r *okResource) Prepare(string, []byte) error               { return nil }
func (r *okResource) Commit(tx string, _ []byte)                 { r.committed[tx] = true }
func (r *okResource) Abort(tx string, _ []byte)                  { r.aborted[tx] = true }

// memLog keeps a machine's records and how many are durable.
type memLog struct {
	recs    []twopc.Record
	durable int
}

func (l *memLog) take(rd twopc.Ready) {
	l.recs = append(l.recs, rd.Records...)
	if rd.MustSync() {
		l.durable = len(l.recs)
	}
}

func (l *memLog) crash() { l.recs = l.recs[:l.durable] }

func restartCoord(t *testing.T, l *memLog) *twopc.Coordinator {
	t.Helper()
	c, err := twopc.NewCoordinator(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 50, RetryBase: 2, RetryMax: 8})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := c.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	c.Start()
	return c
}

// TestRegressPresumedAbortForgotten: found by the long campaign (seed
// 1006374 of `dtx chaos --seed 1000000 --runs 100000` in its first
// version; liveness, with an atomicity violation behind it). An in-doubt
// participant asked a restarted coordinator about t9, whose BEGIN had been
// lost; the coordinator answered ABORT (presumed abort) and neither logged
// nor remembered it. When the client resubmitted t9 it ran it afresh (in
// the same incarnation, or, as here, after another crash): the prepared
// branch voted YES again, the delayed ABORT then aborted it, and the
// others committed. A presumed-abort answer is a decision: it must not be
// contradicted later.
func TestRegressPresumedAbortForgotten(t *testing.T) {
	nodes := []string{"inventory", "payment", "order"}
	branches := func() []twopc.Branch {
		var bs []twopc.Branch
		for _, n := range nodes {
			bs = append(bs, twopc.Branch{Node: n, Op: []byte("op")})
		}
		return bs
	}
	var clog memLog
	coord := restartCoord(t, &clog) // epoch 1
	clog.take(coord.Ready())
	coord.Advance()
	parts := map[string]*twopc.Participant{}
	ress := map[string]*okResource{}
	for _, n := range nodes {
		ress[n] = &okResource{committed: map[string]bool{}, aborted: map[string]bool{}}
		p, err := twopc.NewParticipant(twopc.ParticipantConfig{ID: n, Coordinator: twopc.CoordinatorID,
			LockTimeout: 50, InquireAfter: 10, InquireMax: 20}, ress[n])
		if err != nil {
			t.Fatal(err)
		}
		p.Start()
		parts[n] = p
	}
	stepPart := func(m twopc.Message) []twopc.Message {
		p := parts[m.To]
		p.Step(m)
		rd := p.Ready().Clone()
		p.Advance()
		return rd.Messages
	}
	stepCoord := func(m twopc.Message) twopc.Ready {
		coord.Step(m)
		rd := coord.Ready().Clone()
		clog.take(rd)
		coord.Advance()
		return rd
	}

	// Epoch 1: t9's PREPARE reaches inventory only, which votes YES; the
	// coordinator crashes and loses its unforced BEGIN.
	if err := coord.Propose("t9", branches()); err != nil {
		t.Fatal(err)
	}
	rd := coord.Ready().Clone()
	clog.take(rd)
	coord.Advance()
	stepPart(rd.Messages[0]) // PREPARE -> inventory: YES (lost)
	clog.crash()

	// Epoch 2: inventory asks; the answer (ABORT) is held up in the network.
	coord = restartCoord(t, &clog)
	clog.take(coord.Ready())
	coord.Advance()
	held := stepCoord(twopc.Message{Type: twopc.MsgInquire, From: "inventory", To: twopc.CoordinatorID, Tx: "t9", Epoch: 1}).Messages
	clog.crash()

	// Epoch 3: the client resubmits t9.
	coord = restartCoord(t, &clog)
	clog.take(coord.Ready())
	coord.Advance()
	if err := coord.Propose("t9", branches()); err != nil {
		t.Fatal(err)
	}
	rd = coord.Ready().Clone()
	clog.take(rd)
	coord.Advance()
	// Every PREPARE is delivered, then the held ABORT, then the votes.
	var votes []twopc.Message
	for _, m := range rd.Messages {
		votes = append(votes, stepPart(m)...)
	}
	for _, m := range held {
		stepPart(m)
	}
	var commits []twopc.Message
	for _, v := range votes {
		commits = append(commits, stepCoord(v).Messages...)
	}
	for _, m := range commits {
		for _, ack := range stepPart(m) {
			stepCoord(ack)
		}
	}
	st, _ := coord.State("t9")
	committed := st == twopc.CoordCommitted || st == twopc.CoordCommitting
	for _, n := range nodes {
		if ress[n].committed["t9"] != committed {
			t.Errorf("t9: coordinator %v, but %s committed=%v aborted=%v", st, n, ress[n].committed["t9"], ress[n].aborted["t9"])
		}
	}
}
