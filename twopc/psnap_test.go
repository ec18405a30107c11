package twopc

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestParticipantSnapshot: a participant rebuilt from a snapshot (and the
// Resource's state of the same turn) plus the records logged after it
// behaves as the one that took it: a prepared branch holds its lock and is
// in doubt, commits once when told; a finished branch answers a duplicate
// PREPARE with the same vote; the epoch fence holds.
func TestParticipantSnapshot(t *testing.T) {
	var l memLog
	res := newKV()
	p := mustPart(t, "a", &l, res)
	take(&l, p)
	for _, tx := range []string{"t1", "t2", "t3"} {
		p.Step(prepareMsg(tx, "a", "k"+tx, 1))
		take(&l, p)
	}
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t1", Epoch: 1})
	p.Step(Message{Type: MsgAbort, From: CoordinatorID, To: "a", Tx: "t2", Epoch: 1})
	p.Step(prepareMsg("t4", "a", "k=fail", 1))
	take(&l, p)
	snap, err := p.AppendSnapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	cut := len(l.recs)
	// The resource's snapshot of the same turn.
	res2 := newKV()
	res2.prepared, res2.committed = maps.Clone(res.prepared), maps.Clone(res.committed)
	// After the snapshot: t3 commits (logged).
	p.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t3", Epoch: 1})
	take(&l, p)

	check := func(withTail bool) {
		t.Helper()
		r := newKV()
		r.prepared, r.committed = maps.Clone(res2.prepared), maps.Clone(res2.committed)
		q, err := NewParticipant(testPartConfig("a"), multiKV{r})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.RestoreSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		var tail memLog
		if withTail {
			for _, rec := range l.recs[cut:] {
				if err := q.Restore(rec); err != nil {
					t.Fatal(err)
				}
			}
		}
		q.Start()
		take(&tail, q)
		if withTail {
			if q.InDoubt() != 0 || r.committed["t3"] != "kt3" || r.calls["commit t3"] != 1 {
				t.Fatalf("with the tail: in doubt %d, committed %v", q.InDoubt(), r.committed)
			}
			return
		}
		if q.InDoubt() != 1 {
			t.Fatalf("t3 must be in doubt after the snapshot, got %d", q.InDoubt())
		}
		// t3 holds its lock: a conflicting PREPARE waits.
		q.Step(prepareMsg("t5", "a", "kt3", 1))
		if v := msgsOf(take(&tail, q), MsgVote); len(v) != 0 {
			t.Fatalf("t5 must wait for t3's lock: %v", v)
		}
		q.Step(Message{Type: MsgCommit, From: CoordinatorID, To: "a", Tx: "t3", Epoch: 1})
		rd := take(&tail, q)
		if r.committed["t3"] != "kt3" || r.calls["prepare t3"] != 0 {
			t.Fatalf("t3 must commit from the snapshot's tentative state without a second prepare: %v %v", r.committed, r.calls)
		}
		if v := msgsOf(rd, MsgVote); len(v) != 1 || v[0].Tx != "t5" || v[0].Vote != VoteYes {
			t.Fatalf("t5 must get t3's lock: %+v", rd)
		}
		// Finished branches keep their votes.
		q.Step(prepareMsg("t2", "a", "kt2", 1))
		if v := msgsOf(take(&tail, q), MsgVote); len(v) != 1 || v[0].Vote != VoteNo {
			t.Fatalf("aborted t2: duplicate PREPARE must get NO: %v", v)
		}
		q.Step(prepareMsg("t1", "a", "kt1", 1))
		if v := msgsOf(take(&tail, q), MsgVote); len(v) != 0 || r.calls["prepare t1"] != 0 {
			t.Fatalf("committed t1: a late duplicate PREPARE must get no vote and change nothing: %v %v", v, r.calls)
		}
	}
	check(false)
	check(true)

	// A damaged snapshot is refused, never half-loaded silently.
	for _, bad := range [][]byte{snap[:len(snap)-1], append(append([]byte(nil), snap...), 0), {9}} {
		q, _ := NewParticipant(testPartConfig("a"), multiKV{newKV()})
		if err := q.RestoreSnapshot(bad); err == nil {
			t.Fatalf("damaged snapshot %x accepted", bad)
		}
	}
}

// TestParticipantSnapshotVersion3: a snapshot of the format before
// generations were counted (version 3: exactly a previous and a current
// generation) still restores, inline or with its tables in files, to the
// same branches as the version 4 snapshot it is cut from, and
// ParticipantSnapshotTables names its tables (so a first snapshot after an
// upgrade never prunes the files the older one needs); a version 4
// snapshot claiming no generation or more than any build keeps is refused.
func TestParticipantSnapshotVersion3(t *testing.T) {
	var l memLog
	res := newKV()
	p, err := NewParticipant(testPartConfig("a"), multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	for i := range 30 {
		p.finished.Put(fmt.Sprintf("old%d", i), txVal{state: uint8(BranchCommitted), a: 1}, "")
	}
	p.rotate()
	for i := range 12 {
		p.finished.Put(fmt.Sprintf("new%d", i), txVal{state: uint8(BranchAborted), a: 2, b: 1}, "why")
	}
	p.finished.Put("old3", txVal{state: uint8(BranchAborted), a: 2}, "again") // newer than its first
	enc, err := p.SnapshotDeferredSpill()
	if err != nil {
		t.Fatal(err)
	}
	store := newSpillStore(t)
	spilled, err := enc(nil, store)
	if err != nil {
		t.Fatal(err)
	}
	inline, err := enc(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// version, maxEpoch 0, no prepared branch, then the generation count.
	toV3 := func(b []byte) []byte {
		if b[0] != snapshotVersion || b[1] != 0 || b[2] != 0 || b[3] != 2 {
			t.Fatalf("unexpected snapshot head % x", b[:4])
		}
		return append([]byte{snapshotVersionV3, 0, 0}, b[4:]...)
	}
	for _, c := range []struct {
		how  string
		b    []byte
		from TableSource
	}{{"inline", toV3(inline), nil}, {"spilled", toV3(spilled), spillSource{store}}} {
		q, err := NewParticipant(testPartConfig("a"), multiKV{newKV()})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.RestoreSnapshotFrom(c.b, c.from); err != nil {
			t.Fatalf("%s version 3 snapshot: %v", c.how, err)
		}
		if n, _ := q.FinishedStats(); n != 43 || len(q.older) != 1 {
			t.Fatalf("%s: %d finished branches in %d older generations; want 43 in 1", c.how, n, len(q.older))
		}
		for _, tx := range []string{"old0", "old3", "old29", "new0", "new11"} {
			want, got := p.branchOf(tx), q.branchOf(tx)
			if got == nil || got.state != want.state || got.attempt != want.attempt || got.gen != want.gen || got.reason != want.reason {
				t.Fatalf("%s: %s restored as %+v, want %+v", c.how, tx, got, want)
			}
		}
	}
	want, _ := ParticipantSnapshotTables(spilled)
	got, err := ParticipantSnapshotTables(toV3(spilled))
	if err != nil || len(want) != 2 || !slices.Equal(got, want) {
		t.Fatalf("ParticipantSnapshotTables of the version 3 snapshot = %v, %v; want %v (two tables)", got, err, want)
	}
	for _, k := range []byte{0, maxSnapshotGenerations + 1} {
		b := slices.Clone(inline)
		b[3] = k
		q, _ := NewParticipant(testPartConfig("a"), multiKV{newKV()})
		if err := q.RestoreSnapshot(b); !errors.Is(err, ErrDecode) {
			t.Fatalf("a snapshot of %d generations restored: %v; want ErrDecode", k, err)
		}
		if _, err := ParticipantSnapshotTables(b); err == nil {
			t.Fatalf("ParticipantSnapshotTables of a snapshot of %d generations: no error", k)
		}
	}
}
