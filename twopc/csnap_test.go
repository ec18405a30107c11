package twopc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestCoordinatorSnapshotReplay: a coordinator rebuilt from a snapshot and
// the records logged after it knows exactly what one rebuilt from the
// whole log knows: every id's state (retained outcome, expired, in flight
// or unknown), the sizes of the generations, and what Start then does
// (presumed aborts, COMMITs resent). Random transactions (commits, NO
// votes, restarts, ACKs owed across rotations) run across a dozen
// rotations; snapshots are captured between Readies at random moments and
// serialized only later, after more work changed the tables in place and
// rotated them (the capture shares their chunks, copy on write).
func TestCoordinatorSnapshotReplay(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { coordSnapshotRun(t, seed) })
	}
}

func coordSnapshotRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var l memLog
	cfg := testCoordConfig()
	cfg.Retention = 14 // a generation every 2 ticks
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(&l, c)
	type snap struct {
		after  int // records logged before the capture
		encode func() []byte
		data   []byte
	}
	var snaps []*snap
	var ids []string
	// Enough rotations to fill every generation and expired set, then a
	// little more work and a last snapshot: a
	// CHECKPOINT after a snapshot carries the unfinished transactions
	// and the epoch again, so only a snapshot after the last one shows
	// whether the snapshot itself holds them.
	extra := 0
	for i := 0; extra < 30; i++ {
		if c.RetentionStats().Checkpoints >= 2*Generations+2 {
			extra++
		}
		switch k := rng.IntN(12); {
		case k < 4:
			tx := fmt.Sprintf("t%d", i)
			if rng.IntN(8) == 0 && len(ids) > 0 {
				tx = ids[rng.IntN(len(ids))] // a resubmission
			} else {
				ids = append(ids, tx)
			}
			_ = c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}})
			if rng.IntN(2) == 0 {
				// Both vote YES at once: it commits, and often waits
				// for a's ACK across snapshots and rotations.
				take(&l, c)
				c.Step(Message{Type: MsgVote, From: "a", To: CoordinatorID, Tx: tx, Vote: VoteYes, Attempt: 1})
				c.Step(Message{Type: MsgVote, From: "b", To: CoordinatorID, Tx: tx, Vote: VoteYes, Attempt: 1})
			}
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
		case k < 9:
			take(&l, c)
			enc, err := c.SnapshotDeferred()
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, &snap{after: len(l.recs), encode: enc})
		default:
			c.Tick()
		}
		take(&l, c)
		// Serialize some captures later than they were taken.
		for _, s := range snaps {
			if s.data == nil && rng.IntN(20) == 0 {
				s.data = s.encode()
			}
		}
	}
	enc, err := c.SnapshotDeferred()
	if err != nil {
		t.Fatal(err)
	}
	snaps = append(snaps, &snap{after: len(l.recs), encode: enc})
	ids = append(ids, "never-seen")
	if len(snaps) < 5 {
		t.Fatalf("seed %d: %d snapshots", seed, len(snaps))
	}
	full := replayInto(t, l.recs, nil)
	for si, sn := range snaps {
		if sn.data == nil {
			sn.data = sn.encode()
		}
		got := replayInto(t, l.recs[sn.after:], sn.data)
		if a, b := full.RetentionStats(), got.RetentionStats(); a.Current != b.Current || a.Previous != b.Previous || a.Expired != b.Expired {
			t.Fatalf("seed %d, snapshot %d (of %d, after record %d): generations %+v, from the whole log %+v", seed, si, len(snaps), sn.after, b, a)
		}
		for _, tx := range ids {
			s1, k1 := full.State(tx)
			s2, k2 := got.State(tx)
			if s1 != s2 || k1 != k2 || full.Expired(tx) != got.Expired(tx) {
				t.Fatalf("seed %d, snapshot %d (of %d, after record %d): %s is %v/%v/expired %v, from the whole log %v/%v/expired %v",
					seed, si, len(snaps), sn.after, tx, s2, k2, got.Expired(tx), s1, k1, full.Expired(tx))
			}
		}
	}
	// What Start does is the same too.
	last := snaps[len(snaps)-1]
	a, b := replayInto(t, l.recs, nil), replayInto(t, l.recs[last.after:], last.data)
	a.Start()
	b.Start()
	ra, rb := a.Ready(), b.Ready()
	if fmt.Sprint(ra.Records) != fmt.Sprint(rb.Records) || fmt.Sprint(ra.Messages) != fmt.Sprint(rb.Messages) {
		t.Fatalf("seed %d: Start after the whole log:\n%v\n%v\nafter the last snapshot:\n%v\n%v", seed, ra.Records, ra.Messages, rb.Records, rb.Messages)
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
		if err := c.RestoreSnapshot(data); err != nil {
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

// TestCoordinatorSnapshotRefused: a machine that is not fresh, every cut of
// the bytes, and an unknown version are refused, never loaded as something
// else.
func TestCoordinatorSnapshotRefused(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 3)
	commitOne(t, c, &l, "t1")
	ticks(c, &l, 3)
	commitOne(t, c, &l, "t2")
	if err := c.Propose("t3", []Branch{{Node: "a", Op: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	take(&l, c)
	enc, err := c.SnapshotDeferred()
	if err != nil {
		t.Fatal(err)
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
	if err := m.RestoreSnapshot(data); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.State("t3"); st != CoordCollecting {
		t.Fatalf("t3 after the snapshot: %v", st)
	}
	if err := m.RestoreSnapshot(data); err == nil {
		t.Fatal("a second snapshot loaded into the same machine")
	}
	for i := range data {
		if err := fresh().RestoreSnapshot(data[:i]); err == nil {
			t.Fatalf("the snapshot cut to %d of %d bytes loaded", i, len(data))
		}
	}
	bad := append([]byte{coordSnapVersion + 1}, data[1:]...)
	if err := fresh().RestoreSnapshot(bad); err == nil {
		t.Fatal("an unknown version loaded")
	}
	c.Tick()
	if _, err := c.SnapshotDeferred(); err == nil && c.HasReady() {
		t.Fatal("a snapshot taken with a Ready pending")
	}
}

// BenchmarkCoordinatorSnapshotLoad: RestoreSnapshot of a coordinator
// holding 1M retained outcomes (half in each generation) and 500,000
// expired ids, and, for comparison, filling the same tables by Put, as
// the load did before it went in bulk.
func BenchmarkCoordinatorSnapshotLoad(b *testing.B) {
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	c, err := NewCoordinator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	id := func(g, i int) string { return fmt.Sprintf("bench-%d-%08d-0123456789", g, i) }
	for i := range 500_000 {
		c.done.Put(id(0, i), txVal{state: 1, a: 1}, "")
	}
	c.rotate()
	for i := range 500_000 {
		c.done.Put(id(1, i), txVal{state: 1, a: 1}, "")
	}
	c.rotate() // generation 0 expired, 1 previous
	for i := range 500_000 {
		c.done.Put(id(2, i), txVal{state: uint8(i % 2), a: 1}, "")
	}
	enc, err := c.SnapshotDeferred()
	if err != nil {
		b.Fatal(err)
	}
	data := enc()
	b.Run("bulk", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			m, _ := NewCoordinator(cfg)
			if err := m.RestoreSnapshot(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("put", func(b *testing.B) {
		for b.Loop() {
			t1, t2 := newTxTable(), newTxTable()
			t1.reserve(500_000)
			t2.reserve(500_000)
			for i := range 500_000 {
				t1.Put(id(1, i), txVal{state: 1, a: 1}, "")
				t2.Put(id(2, i), txVal{state: uint8(i % 2), a: 1}, "")
			}
		}
	})
}

// FuzzCoordinatorSnapshot: RestoreSnapshot never panics on any bytes, and
// what it accepts encodes back to a snapshot that loads into the same
// state (the ids in it answer alike).
func FuzzCoordinatorSnapshot(f *testing.F) {
	var l memLog
	cfg := testCoordConfig()
	cfg.Retention = 3
	c, err := NewCoordinator(cfg)
	if err != nil {
		f.Fatal(err)
	}
	c.Start()
	take(&l, c)
	for i := range 6 {
		tx := fmt.Sprintf("t%d", i)
		_ = c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}})
		take(&l, c)
		if i%2 == 0 {
			c.Step(Message{Type: MsgVote, From: "a", To: CoordinatorID, Tx: tx, Vote: VoteYes, Attempt: 1})
			c.Step(Message{Type: MsgVote, From: "b", To: CoordinatorID, Tx: tx, Vote: VoteYes, Attempt: 1})
			take(&l, c)
		}
		ticks(c, &l, 2)
	}
	enc, err := c.SnapshotDeferred()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc())
	f.Add([]byte{coordSnapVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := NewCoordinator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if m.RestoreSnapshot(b) != nil {
			return
		}
		again, err := m.SnapshotDeferred()
		if err != nil {
			t.Fatal(err)
		}
		m2, _ := NewCoordinator(cfg)
		if err := m2.RestoreSnapshot(again()); err != nil {
			t.Fatalf("an accepted snapshot re-encodes to one refused: %v", err)
		}
		if a, b := m.RetentionStats(), m2.RetentionStats(); a != b || m.Inflight() != m2.Inflight() || m.Epoch() != m2.Epoch() {
			t.Fatalf("re-encoded snapshot differs: %+v/%d/%d, %+v/%d/%d", a, m.Inflight(), m.Epoch(), b, m2.Inflight(), m2.Epoch())
		}
	})
}

// TestCoordinatorSnapshotVersion3: a snapshot of the format before
// generations were counted (version 3: the current generation, a previous
// one, one expired set) still restores, inline or with its tables in
// files, and CoordinatorSnapshotTables names its tables (so the first
// snapshot after an upgrade never prunes the files the older one needs);
// a version 4 snapshot claiming no generation or too many is refused.
func TestCoordinatorSnapshotVersion3(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 1<<40)
	fill := func(prefix string, n int) {
		for i := range n {
			c.finish(fmt.Sprintf("%s%d", prefix, i), finished{committed: i%3 != 0, attempt: 1, reason: "r"})
		}
	}
	fill("gone-", 25)
	for range Generations {
		c.rotate()
	}
	fill("prev-", 20)
	c.rotate()
	fill("cur-", 10)
	// What a build of version 3 wrote, from this coordinator's current
	// generation, its newest earlier one and its newest expired set.
	encodeV3 := func(sp TableSpill) []byte {
		b := binary.AppendUvarint([]byte{coordSnapVersionV3}, c.epoch)
		b = append(b, 0) // no unfinished transaction
		done, prev := c.done.freeze(), c.older[len(c.older)-1].freeze()
		b, _ = appendTable(b, &done, sp)
		b, _ = appendTable(append(b, 1), &prev, sp)
		e := c.exps[0] // gone-*: the later ones are of empty generations
		b = binary.LittleEndian.AppendUint64(b, e.k0)
		b = binary.LittleEndian.AppendUint64(b, e.k1)
		if sp == nil {
			b = binary.AppendUvarint(append(b, tableInline), uint64(len(e.hashes)))
			for _, h := range e.hashes {
				b = binary.LittleEndian.AppendUint64(b, h)
			}
			return b
		}
		ref, _ := sp.Hashes(e.id, e.hashes)
		return appendRef(append(b, tableRef), ref)
	}
	store := newSpillStore(t)
	spilled, inline := encodeV3(store), encodeV3(nil)
	for _, v := range []struct {
		how  string
		b    []byte
		from TableSource
	}{{"inline", inline, nil}, {"spilled", spilled, spillSource{store}}} {
		cfg := testCoordConfig()
		cfg.Retention = 1 << 40
		r, _ := NewCoordinator(cfg)
		if err := r.RestoreSnapshotFrom(v.b, v.from); err != nil {
			t.Fatalf("%s version 3 snapshot: %v", v.how, err)
		}
		if st := r.RetentionStats(); st.Current != 10 || st.Previous != 20 || st.Expired != 25 || len(r.older) != 1 || len(r.exps) != 1 {
			t.Fatalf("%s: restored %+v in %d earlier generations and %d expired sets; want 10, 20, 25 in 1 and 1", v.how, st, len(r.older), len(r.exps))
		}
		for _, tx := range []string{"cur-0", "cur-9", "prev-0", "prev-19"} {
			want, _ := c.finishedTx(tx)
			if got, ok := r.finishedTx(tx); !ok || got != want {
				t.Fatalf("%s: %s restored as %+v (%v), want %+v", v.how, tx, got, ok, want)
			}
		}
		if !r.Expired("gone-0") || !r.Expired("gone-24") || r.Expired("never") {
			t.Fatalf("%s: the expired set was not restored", v.how)
		}
	}
	refs, err := CoordinatorSnapshotTables(spilled)
	if err != nil || len(refs) != 3 || !slices.Equal(refs, store.refs) {
		t.Fatalf("CoordinatorSnapshotTables of the version 3 snapshot = %v, %v; the spill handed out %v", refs, err, store.refs)
	}
	cur, err := c.SnapshotDeferred()
	if err != nil {
		t.Fatal(err)
	}
	b := cur()
	// version, epoch, no unfinished transaction, then the generation count.
	if b[0] != coordSnapVersion || b[2] != 0 || b[3] != Generations {
		t.Fatalf("unexpected snapshot head % x", b[:4])
	}
	for _, k := range []byte{0, maxSnapshotGenerations + 1} {
		bad := slices.Clone(b)
		bad[3] = k
		cfg := testCoordConfig()
		r, _ := NewCoordinator(cfg)
		if err := r.RestoreSnapshot(bad); !errors.Is(err, ErrDecode) {
			t.Fatalf("a snapshot of %d generations restored: %v; want ErrDecode", k, err)
		}
		if _, err := CoordinatorSnapshotTables(bad); err == nil {
			t.Fatalf("CoordinatorSnapshotTables of a snapshot of %d generations: no error", k)
		}
	}
}
