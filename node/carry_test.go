package node

import (
	"fmt"
	"testing"

	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// disk is one node's log on a simulated disk.
type disk struct {
	fs  *wal.MemFS
	cfg wal.Config
}

func newDisk(seed uint64) *disk {
	fs := wal.NewMemFS(seed)
	return &disk{fs: fs, cfg: wal.Config{Dir: "/log", FS: fs, SegmentSize: 1 << 20}}
}

func newCoord(t *testing.T) *twopc.Coordinator {
	t.Helper()
	c, err := twopc.NewCoordinator(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 100, RetryBase: 5, RetryMax: 50})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// heard is what left a carrier, with how much of its log was durable then.
type heard struct {
	log      *wal.Log
	msgs     []twopc.Message
	msgAt    []uint64
	outs     []twopc.Outcome
	outAt    []uint64
	commitAt uint64 // the COMMIT record's seq
}

func (h *heard) Send(msgs []twopc.Message) {
	for _, m := range msgs {
		h.msgs = append(h.msgs, m)
		h.msgAt = append(h.msgAt, h.log.DurableSeq())
	}
}

// early returns what was heard of t1's COMMIT before its record was
// durable.
func (h *heard) early() []string {
	var bad []string
	for i, m := range h.msgs {
		if m.Type == twopc.MsgCommit && h.msgAt[i] < h.commitAt {
			bad = append(bad, fmt.Sprintf("COMMIT to %s left with the log durable to %d, before the COMMIT record (%d)", m.To, h.msgAt[i], h.commitAt))
		}
	}
	for i, o := range h.outs {
		if o.Committed && h.outAt[i] < h.commitAt {
			bad = append(bad, fmt.Sprintf("the client heard COMMITTED with the log durable to %d, before the COMMIT record (%d)", h.outAt[i], h.commitAt))
		}
	}
	return bad
}

// commitT1 recovers a coordinator from d with hooks and carries it through
// one transaction, t1 on nodes a and b, up to its decision: the log then
// ends in t1's COMMIT record (no ACK comes).
func commitT1(t *testing.T, d *disk, hooks Hooks) (*heard, *wal.Log) {
	t.Helper()
	c := newCoord(t)
	log, err := Recover(d.cfg, c, hooks)
	if err != nil {
		t.Fatal(err)
	}
	h := &heard{log: log}
	cr := &Carrier{ID: "coordinator", Log: log, Transport: h, Hooks: hooks,
		OnOutcomes: func(os []twopc.Outcome) {
			for _, o := range os {
				h.outs = append(h.outs, o)
				h.outAt = append(h.outAt, log.DurableSeq())
			}
		},
		OnRecord: func(r *twopc.Record) {
			if r.Type == twopc.RecCommit {
				h.commitAt = log.LastSeq()
			}
		}}
	carry := func() {
		t.Helper()
		if err := cr.Carry(c); err != nil {
			t.Fatal(err)
		}
		if c.HasReady() {
			t.Fatal("Carry left a Ready behind")
		}
	}
	carry() // the new epoch
	if err := c.Propose("t1", []twopc.Branch{{Node: "a", Op: []byte("x")}, {Node: "b", Op: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	carry()
	for _, n := range []string{"a", "b"} {
		c.Step(twopc.Message{Type: twopc.MsgVote, From: n, To: twopc.CoordinatorID, Tx: "t1", Vote: twopc.VoteYes, Epoch: c.Epoch(), Attempt: 1})
	}
	carry()
	if h.commitAt == 0 || h.commitAt != log.LastSeq() {
		t.Fatalf("the log does not end in t1's COMMIT (COMMIT at %d, last %d)", h.commitAt, log.LastSeq())
	}
	return h, log
}

// recoverT1 rebuilds a coordinator from d with hooks and returns t1's state
// and the first Ready after Start.
func recoverT1(t *testing.T, d *disk, hooks Hooks) (twopc.CoordState, twopc.Ready) {
	t.Helper()
	c := newCoord(t)
	log, err := Recover(d.cfg, c, hooks)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	st, _ := c.State("t1")
	return st, c.Ready().Clone()
}

// commitForced is the property TestCarryForcesCommit checks, as a list of
// what broke it.
func commitForced(t *testing.T, hooks Hooks) []string {
	d := newDisk(1)
	h, _ := commitT1(t, d, hooks)
	bad := h.early()
	if len(h.msgs) == 0 || len(h.outs) == 0 {
		t.Fatalf("t1's decision was not sent or reported: %d messages, %d outcomes", len(h.msgs), len(h.outs))
	}
	// Power loss right after: only what was synced survives, and the
	// decision that was sent must be among it.
	d.fs.Crash(wal.CrashSyncedOnly)
	if st, _ := recoverT1(t, d, Hooks{}); st != twopc.CoordCommitting {
		bad = append(bad, fmt.Sprintf("after a power loss t1 is %v, want COMMITTING: its COMMIT was sent", st))
	}
	return bad
}

// TestCarryForcesCommit: the carrier makes the COMMIT record durable before
// any COMMIT message leaves or the client hears COMMITTED, so a power loss
// right after keeps the decision. The same checks are run with the driver
// bug planted that skips the sync of a Ready holding a COMMIT record, and
// must catch it.
func TestCarryForcesCommit(t *testing.T) {
	if bad := commitForced(t, Hooks{}); len(bad) > 0 {
		t.Fatalf("COMMIT not forced: %v", bad)
	}
	bad := commitForced(t, Hooks{Mutants: mutant.SkipCommitSync})
	if len(bad) == 0 {
		t.Fatal("the checks did not catch a carrier that skips the sync of a COMMIT")
	}
	t.Logf("planted bug caught: %v", bad)
}

// replaysCommit is the property TestRecoverLogEndingInCommit checks, as a
// list of what broke it.
func replaysCommit(t *testing.T, replay Hooks) []string {
	d := newDisk(2)
	_, log := commitT1(t, d, Hooks{})
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	var bad []string
	st, rd := recoverT1(t, d, replay)
	if st != twopc.CoordCommitting {
		bad = append(bad, fmt.Sprintf("t1 replays to %v, want COMMITTING", st))
	}
	to := map[string]bool{}
	for _, m := range rd.Messages {
		if m.Type == twopc.MsgCommit && m.Tx == "t1" {
			to[m.To] = true
		}
	}
	if !to["a"] || !to["b"] {
		bad = append(bad, fmt.Sprintf("after recovery COMMIT t1 goes to %v, want a and b", to))
	}
	for _, o := range rd.Outcomes {
		if o.Tx == "t1" && !o.Committed {
			bad = append(bad, "recovery aborted t1: "+o.Reason)
		}
	}
	return bad
}

// TestRecoverLogEndingInCommit: a log whose last record is a COMMIT
// (acknowledgements still due) is replayed to a committing transaction, and
// Start resends COMMIT to every participant. The same checks catch a replay
// that drops the last record of a log, and one that skips COMMIT records.
func TestRecoverLogEndingInCommit(t *testing.T) {
	if bad := replaysCommit(t, Hooks{}); len(bad) > 0 {
		t.Fatalf("%v", bad)
	}
	for name, m := range map[string]mutant.Set{"drops-last": mutant.ReplayDropsLast, "skips-commit": mutant.ReplaySkipsCommit} {
		bad := replaysCommit(t, Hooks{Mutants: m})
		if len(bad) == 0 {
			t.Errorf("the checks did not catch the planted replay bug %s", name)
			continue
		}
		t.Logf("planted replay bug %s caught: %v", name, bad)
	}
}

// TestCarryCrashPoints: each crash hook stops the carrier where it says.
// Before the log nothing is written or sent; after the log the records are
// durable and nothing is sent; after the send the messages left and the
// outcomes were not reported. A crashed carrier does not advance the
// machine.
func TestCarryCrashPoints(t *testing.T) {
	yes := func(*twopc.Ready) bool { return true }
	for _, tc := range []struct {
		name                           string
		hooks                          Hooks
		wantDurable, wantSent, wantOut bool
	}{
		{"before-log", Hooks{CrashBeforeLog: func(*twopc.Ready, bool) bool { return true }}, false, false, false},
		{"after-log", Hooks{CrashAfterLog: yes}, true, false, false},
		{"after-send", Hooks{CrashAfterSend: yes}, true, true, false},
		{"none", Hooks{}, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDisk(3)
			c := newCoord(t)
			log, err := Recover(d.cfg, c, Hooks{})
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			h := &heard{log: log}
			var synced []bool
			cr := &Carrier{ID: "coordinator", Log: log, Transport: h, OnOutcomes: func(os []twopc.Outcome) { h.outs = append(h.outs, os...) }}
			if err := cr.Carry(c); err != nil { // the epoch
				t.Fatal(err)
			}
			for _, n := range []string{"a", "b"} {
				c.Step(twopc.Message{Type: twopc.MsgInquire, From: n, To: twopc.CoordinatorID, Tx: "t9", Epoch: 1, Attempt: 1})
			}
			// Two presumed-abort answers: forced ABORT records, two
			// messages. The hooks see whether the append syncs.
			cr.Hooks = tc.hooks
			inner := cr.Hooks.CrashBeforeLog
			cr.Hooks.CrashBeforeLog = func(rd *twopc.Ready, sync bool) bool {
				synced = append(synced, sync)
				return inner != nil && inner(rd, sync)
			}
			before := log.LastSeq()
			err = cr.Carry(c)
			crashed := tc.name != "none"
			if crashed != (err == ErrCrashed) {
				t.Fatalf("Carry: %v", err)
			}
			if len(synced) != 1 || !synced[0] {
				t.Fatalf("CrashBeforeLog saw sync %v, want one forced append", synced)
			}
			if got := log.DurableSeq() > before; got != tc.wantDurable {
				t.Errorf("records durable: %v, want %v", got, tc.wantDurable)
			}
			if got := len(h.msgs) > 0; got != tc.wantSent {
				t.Errorf("messages sent: %v, want %v", got, tc.wantSent)
			}
			if crashed != c.HasReady() {
				t.Errorf("machine advanced: %v, want %v", !c.HasReady(), !crashed)
			}
		})
	}
}
