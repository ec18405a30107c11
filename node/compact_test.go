package node

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

type nowhere struct{}

func (nowhere) Send([]twopc.Message) {}

func retainingCoord(t *testing.T) *twopc.Coordinator {
	t.Helper()
	c, err := twopc.NewCoordinator(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 100, RetryBase: 5, RetryMax: 50, Retention: 20})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCarrierCompacts: with outcome retention, the carrier compacts the
// coordinator's log behind its checkpoints, so the log stays bounded by
// the retention however many transactions ran; a coordinator recovered
// from the compacted log knows the retained outcomes, refuses the expired
// ids, and keeps a transaction that was committing all along.
func TestCarrierCompacts(t *testing.T) {
	fs := wal.NewMemFS(1)
	cfg := wal.Config{Dir: "/log", FS: fs, SegmentSize: 4096}
	c := retainingCoord(t)
	log, ckpts, err := RecoverCheckpoints(cfg, c, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	cr := &Carrier{ID: "coordinator", Log: log, Transport: nowhere{}, Checkpoints: ckpts}
	carry := func() {
		t.Helper()
		if err := cr.Carry(c); err != nil {
			t.Fatal(err)
		}
	}
	carry()
	// t0 commits; b never ACKs: it is COMMITTING for the whole run.
	if err := c.Propose("t0", []twopc.Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	carry()
	for _, n := range []string{"a", "b"} {
		c.Step(twopc.Message{Type: twopc.MsgVote, From: n, To: twopc.CoordinatorID, Tx: "t0", Vote: twopc.VoteYes, Attempt: 1})
	}
	carry()
	maxSegs := 0
	const n = 3000
	for i := range n {
		tx := fmt.Sprintf("tx-%05d", i)
		if err := c.Propose(tx, []twopc.Branch{{Node: "a", Op: []byte("k")}}); err != nil {
			t.Fatal(err)
		}
		c.Step(twopc.Message{Type: twopc.MsgVote, From: "a", To: twopc.CoordinatorID, Tx: tx, Vote: twopc.VoteYes, Attempt: 1})
		c.Step(twopc.Message{Type: twopc.MsgAck, From: "a", To: twopc.CoordinatorID, Tx: tx, Attempt: 1})
		c.Tick()
		carry()
		maxSegs = max(maxSegs, len(fs.List("/log")))
	}
	if log.FirstSeq() <= 1 {
		t.Fatalf("log never compacted (first seq %d)", log.FirstSeq())
	}
	if maxSegs > 12 {
		t.Fatalf("the log grew to %d segments: not bounded by the retention", maxSegs)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	r := retainingCoord(t)
	log, _, err = RecoverCheckpoints(cfg, r, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if st, _ := r.State("t0"); st != twopc.CoordCommitting {
		t.Fatalf("t0 after recovery: %v, want COMMITTING", st)
	}
	if st, _ := r.State(fmt.Sprintf("tx-%05d", n-1)); st != twopc.CoordCommitted {
		t.Fatalf("the last transaction after recovery: %v, want COMMITTED", st)
	}
	// The last tick rotated: tx n-20..n-1 are the previous generation,
	// n-40..n-21 expired.
	if st, _ := r.State(fmt.Sprintf("tx-%05d", n-10)); st != twopc.CoordCommitted {
		t.Fatalf("an outcome of the previous generation after recovery: %v, want COMMITTED", st)
	}
	if err := r.Propose(fmt.Sprintf("tx-%05d", n-30), []twopc.Branch{{Node: "a", Op: []byte("k")}}); !errors.Is(err, twopc.ErrOutcomeExpired) {
		t.Fatalf("an expired id after recovery: %v, want ErrOutcomeExpired", err)
	}
}
