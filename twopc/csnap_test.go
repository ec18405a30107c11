package twopc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestCheckpointSnapshotReplay: a coordinator rebuilt from a checkpoint
// snapshot and the log from that snapshot's CHECKPOINT head on knows
// exactly what one rebuilt from the whole log knows: every id's state
// (retained outcome, expired, in flight or unknown) and the sizes of the
// generations. Random transactions (commits, NO votes, ACKs owed for a
// long time) run across a dozen rotations; each snapshot is taken on the
// live machine right after the Ready holding its head, as
// node.Carrier.OnCheckpoint does, and every one of them is checked, so the
// older kept snapshot a restart falls back to is checked too.
func TestCheckpointSnapshotReplay(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkpointSnapshotRun(t, seed) })
	}
}

func checkpointSnapshotRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var l memLog
	cfg := testCoordConfig()
	cfg.Retention = 5
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(&l, c)
	type snap struct {
		head int // index of the CHECKPOINT head in l.recs
		data []byte
	}
	var snaps []snap
	step := func() {
		before := len(l.recs)
		take(&l, c)
		head := -1
		for i := before; i < len(l.recs); i++ {
			if r := l.recs[i]; r.Type == RecCheckpoint && r.Attempt == 0 {
				head = i
			}
		}
		if head >= 0 {
			enc, ok := c.CheckpointSnapshot()
			if !ok {
				t.Fatalf("seed %d: a CHECKPOINT head was logged but there is no rotation to snapshot", seed)
			}
			snaps = append(snaps, snap{head, enc()})
		}
	}
	var ids []string
	for i := 0; c.RetentionStats().Checkpoints < 12; i++ {
		switch k := rng.IntN(10); {
		case k < 4:
			tx := fmt.Sprintf("t%d", i)
			if rng.IntN(8) == 0 && len(ids) > 0 {
				tx = ids[rng.IntN(len(ids))] // a resubmission
			} else {
				ids = append(ids, tx)
			}
			_ = c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}})
		case k < 7 && len(ids) > 0:
			tx := ids[rng.IntN(len(ids))]
			v := VoteYes
			if rng.IntN(5) == 0 {
				v = VoteNo
			}
			node := []string{"a", "b"}[rng.IntN(2)]
			c.Step(Message{Type: MsgVote, From: node, To: CoordinatorID, Tx: tx, Vote: v, Attempt: 1})
		case k < 8 && len(ids) > 0:
			// b acknowledges; a often owes its ACK across rotations.
			tx := ids[rng.IntN(len(ids))]
			c.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: tx, Attempt: 1})
			if rng.IntN(3) == 0 {
				c.Step(Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: tx, Attempt: 1})
			}
		default:
			c.Tick()
		}
		step()
	}
	ids = append(ids, "never-seen")
	if len(snaps) < 10 {
		t.Fatalf("seed %d: %d snapshots", seed, len(snaps))
	}
	full := replayInto(t, l.recs, nil)
	for si, sn := range snaps {
		got := replayInto(t, l.recs[sn.head:], sn.data)
		if a, b := full.RetentionStats(), got.RetentionStats(); a.Current != b.Current || a.Previous != b.Previous || a.Expired != b.Expired {
			t.Fatalf("seed %d, snapshot %d (of %d): generations %+v, from the whole log %+v", seed, si, len(snaps), b, a)
		}
		for _, tx := range ids {
			s1, k1 := full.State(tx)
			s2, k2 := got.State(tx)
			if s1 != s2 || k1 != k2 || full.Expired(tx) != got.Expired(tx) {
				t.Fatalf("seed %d, snapshot %d (of %d): %s is %v/%v/expired %v, from the whole log %v/%v/expired %v",
					seed, si, len(snaps), tx, s2, k2, got.Expired(tx), s1, k1, full.Expired(tx))
			}
		}
	}
}

// replayInto rebuilds a coordinator from recs, after loading snapshot data
// if there is one.
func replayInto(t *testing.T, recs []Record, data []byte) *Coordinator {
	t.Helper()
	cfg := testCoordConfig()
	cfg.Retention = 5
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if data != nil {
		if err := c.RestoreCheckpointSnapshot(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs {
		if err := c.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestCheckpointSnapshotRefused: a snapshot whose replay does not begin at
// its CHECKPOINT head, a machine that is not fresh, and damaged bytes are
// refused, never loaded as something else.
func TestCheckpointSnapshotRefused(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 3)
	commitOne(t, c, &l, "t1")
	ticks(c, &l, 3)
	enc, ok := c.CheckpointSnapshot()
	if !ok {
		t.Fatal("no rotation to snapshot")
	}
	data := enc()
	fresh := func() *Coordinator {
		cfg := testCoordConfig()
		cfg.Retention = 3
		m, err := NewCoordinator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := fresh()
	if err := m.RestoreCheckpointSnapshot(data); err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(Record{Type: RecBegin, Tx: "t2", Nodes: []string{"a"}}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("a BEGIN before the snapshot's CHECKPOINT: %v, want ErrBadRecord", err)
	}
	if err := m.RestoreCheckpointSnapshot(data); err == nil {
		t.Fatal("a second snapshot loaded into the same machine")
	}
	for i := range data {
		if err := fresh().RestoreCheckpointSnapshot(data[:i]); err == nil {
			t.Fatalf("the snapshot cut to %d of %d bytes loaded", i, len(data))
		}
	}
	bad := append([]byte{ckptSnapVersion + 1}, data[1:]...)
	if err := fresh().RestoreCheckpointSnapshot(bad); err == nil {
		t.Fatal("an unknown version loaded")
	}
}
