package twopc

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
)

func retainCoord(t *testing.T, l *memLog, retention uint64) *Coordinator {
	t.Helper()
	cfg := testCoordConfig()
	cfg.Retention = retention
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := c.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	c.Start()
	take(l, c)
	return c
}

// commitOne runs tx to END with participant a answering at once.
func commitOne(t *testing.T, c *Coordinator, l *memLog, tx string) {
	t.Helper()
	if err := c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	take(l, c)
	c.Step(Message{Type: MsgVote, From: "a", To: CoordinatorID, Tx: tx, Vote: VoteYes, Attempt: 1})
	take(l, c)
	c.Step(Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: tx, Attempt: 1})
	take(l, c)
	if st, _ := c.State(tx); st != CoordCommitted {
		t.Fatalf("%s: %v, want COMMITTED", tx, st)
	}
}

func ticks(c *Coordinator, l *memLog, n int) {
	for range n {
		c.Tick()
		take(l, c)
	}
}

// resubmit proposes tx again and returns the duplicate outcome, or the
// error.
func resubmit(c *Coordinator, l *memLog, tx string) (Outcome, bool, error) {
	err := c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}})
	rd := take(l, c)
	for _, o := range rd.Outcomes {
		if o.Tx == tx && o.Duplicate {
			return o, true, err
		}
	}
	return Outcome{}, false, err
}

// TestRetentionWindow: an outcome is answered for at least Retention ticks
// and until Generations spans have passed since its generation began; then
// the id is refused as expired (not run, not remembered as aborted by an
// inquiry) for at least another Retention, until 2×Generations-1 spans;
// then it is unknown.
func TestRetentionWindow(t *testing.T) {
	const w = 14
	span := int(GenerationTicks(w))
	if span != 2 {
		t.Fatalf("GenerationTicks(%d) = %d, the test wants 2", w, span)
	}
	var l memLog
	c := retainCoord(t, &l, w)
	commitOne(t, c, &l, "t1") // at tick 0, when generation 0 began
	now := 0
	for ; now < Generations*span; now++ {
		if o, ok, err := resubmit(c, &l, "t1"); err != nil || !ok || !o.Committed {
			t.Fatalf("tick %d, inside the window: %+v %v %v", now, o, ok, err)
		}
		ticks(c, &l, 1)
	}
	if now < w {
		t.Fatalf("retained only %d ticks, less than the retention %d", now, w)
	}
	if st := c.RetentionStats(); st.Checkpoints != Generations || st.Previous != 0 || st.Expired != 1 {
		t.Fatalf("after %d rotations: %+v", Generations, st)
	}
	for ; now < (2*Generations-1)*span; now++ {
		if _, _, err := resubmit(c, &l, "t1"); !errors.Is(err, ErrOutcomeExpired) {
			t.Fatalf("tick %d: %v, want ErrOutcomeExpired", now, err)
		}
		// An inquiry about it is answered ABORT and not remembered: the
		// id stays expired, never becomes "rolled back".
		c.Step(Message{Type: MsgInquire, From: "a", To: CoordinatorID, Tx: "t1", Attempt: 1})
		rd := take(&l, c)
		if len(msgsOf(rd, MsgAbort)) != 1 || hasRecord(rd, RecAbort) {
			t.Fatalf("inquiry about an expired id: %+v", rd)
		}
		ticks(c, &l, 1)
	}
	if now < 2*w {
		t.Fatalf("expired only until tick %d, less than twice the retention %d", now, w)
	}
	if _, ok, err := resubmit(c, &l, "t1"); err != nil || ok {
		t.Fatalf("tick %d: the id is new: %v %v", now, ok, err)
	}
	if st, _ := c.State("t1"); st != CoordCollecting {
		t.Fatalf("t1 runs again: %v", st)
	}
}

// compactTo drops the records before the checkpoint head CheckpointsKept-1
// rotations back, as node.Carrier does with log segments.
func compactTo(l *memLog) {
	var heads []int
	for i, r := range l.recs {
		if r.Type == RecCheckpoint && r.Attempt == 0 {
			heads = append(heads, i)
		}
	}
	if len(heads) >= CheckpointsKept {
		from := heads[len(heads)-CheckpointsKept]
		l.recs = append([]Record(nil), l.recs[from:]...)
		l.durable -= from
	}
}

// TestRetentionReplay: a coordinator rebuilt from a compacted log (only
// from the checkpoint CheckpointsKept-1 rotations back) has the same retained outcomes,
// expired ids and unfinished transactions as the one that wrote it: a
// transaction committing since before the compacted prefix still gets its
// COMMIT resent, one collecting is presumed aborted.
func TestRetentionReplay(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 10)
	// t0 commits, a owes an ACK forever: it stays COMMITTING across every
	// rotation; its BEGIN and COMMIT will be compacted away.
	if err := c.Propose("t0", []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	take(&l, c)
	c.Step(Message{Type: MsgVote, From: "a", To: CoordinatorID, Tx: "t0", Vote: VoteYes, Attempt: 1})
	c.Step(Message{Type: MsgVote, From: "b", To: CoordinatorID, Tx: "t0", Vote: VoteYes, Attempt: 1})
	take(&l, c)
	c.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: "t0", Attempt: 1})
	take(&l, c)
	// Retention 10: a generation every 2 ticks, an outcome kept 16 ticks
	// after its generation began, its id 30.
	ticks(c, &l, 12)
	commitOne(t, c, &l, "old") // expired at the end
	ticks(c, &l, 12)
	commitOne(t, c, &l, "mid") // an earlier generation at the end
	ticks(c, &l, 12)
	commitOne(t, c, &l, "new") // current generation
	if err := c.Propose("open", []Branch{{Node: "a", Op: []byte("k2")}}); err != nil {
		t.Fatal(err)
	}
	take(&l, c)
	l.durable = len(l.recs)
	compactTo(&l)
	for _, r := range l.recs {
		if r.Tx == "t0" && r.Type != RecEvent {
			t.Fatalf("t0's %v should be compacted away", r.Type)
		}
	}
	r := retainCoord(t, &l, 10)
	if st, _ := r.State("t0"); st != CoordCommitting {
		t.Fatalf("t0 after replay: %v, want COMMITTING", st)
	}
	for _, tx := range []string{"mid", "new"} {
		if st, _ := r.State(tx); st != CoordCommitted {
			t.Fatalf("%s after replay: %v, want COMMITTED", tx, st)
		}
	}
	if st, _ := r.State("open"); st != CoordAborted {
		t.Fatalf("open after replay: %v, want ABORTED (presumed)", st)
	}
	if _, _, err := resubmit(r, &l, "old"); !errors.Is(err, ErrOutcomeExpired) {
		t.Fatalf("old after replay: %v, want ErrOutcomeExpired", err)
	}
	// COMMIT to a is resent on a retry.
	sent := false
	for range 20 {
		r.Tick()
		rd := take(&l, r)
		for _, m := range msgsOf(rd, MsgCommit) {
			sent = sent || (m.Tx == "t0" && m.To == "a")
		}
	}
	if !sent {
		t.Fatal("t0's COMMIT is not resent to a after replay")
	}
}

// TestCheckpointChunks: many unfinished transactions are split over
// several CHECKPOINT records and all come back.
func TestCheckpointChunks(t *testing.T) {
	var l memLog
	cfg := testCoordConfig()
	cfg.Retention = 7 // a generation every tick
	cfg.PrepareTimeout = 100
	cfg.MaxInflight = 3 * CheckpointChunk
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(&l, c)
	n := CheckpointChunk + 10
	for i := range n {
		if err := c.Propose(string(rune('a'+i%26))+string(rune(0x100+i)), []Branch{{Node: "a", Op: []byte("k")}}); err != nil {
			t.Fatal(err)
		}
	}
	take(&l, c)
	for range CheckpointsKept {
		c.Tick()
		take(&l, c)
	}
	heads, parts := 0, 0
	for _, r := range l.recs {
		if r.Type == RecCheckpoint {
			parts++
			if r.Attempt == 0 {
				heads++
			}
		}
	}
	if heads != CheckpointsKept || parts != 2*CheckpointsKept {
		t.Fatalf("checkpoint records: %d heads, %d parts; want %d, %d", heads, parts, CheckpointsKept, 2*CheckpointsKept)
	}
	compactTo(&l)
	r, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range l.recs {
		if err := r.Restore(rec); err != nil {
			t.Fatal(err)
		}
	}
	if r.Inflight() != n {
		t.Fatalf("after replay %d unfinished, want %d", r.Inflight(), n)
	}
}

// TestRetainedBytes measures the heap per retained outcome (an id of 24
// bytes, committed) in the current generation (the index between 0.67 and
// 0.8 full: measured at several fill points, the worst counts), in the
// previous one (packed at rotation) and per expired id, and prints them (go
// test -v -run RetainedBytes ./twopc). The bound is 16 bytes besides the
// id for a retained outcome, 10 per expired id.
func TestRetainedBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := heap()
	worst, best, n := 0.0, 1e9, 0
	for _, upto := range []int{120_000, 140_000, 160_000, 180_000, 200_000, 220_000, 240_000, 260_000} {
		for ; n < upto; n++ {
			c.finish(fmt.Sprintf("order-%018d", n), finished{committed: true, attempt: 1})
		}
		per := float64(heap()-before) / float64(n)
		worst, best = max(worst, per), min(best, per)
	}
	c.rotate() // the outcomes are now an earlier generation: packed
	packed := float64(heap()-before) / float64(n)
	for range Generations - 1 {
		c.rotate() // at the last, the outcomes expire: only their hashes are kept
	}
	expired := float64(heap()-before) / float64(n)
	runtime.KeepAlive(c)
	t.Logf("retained outcome (24-byte id), current generation: %.1f to %.1f bytes each (%.1f to %.1f besides the id); previous generation (packed): %.1f (%.1f besides the id); expired id: %.1f bytes each",
		best, worst, best-24, worst-24, packed, packed-24, expired)
	if worst > 24+16 || packed > 24+16 || expired > 10 {
		t.Fatalf("retention costs more than 16 bytes besides the id per outcome or 10 per expired id: %.1f per outcome (worst), %.1f packed, %.1f per expired id", worst, packed, expired)
	}
}

// BenchmarkRotate measures the pause of a coordinator's rotation with
// 200,000 outcomes in the current generation and in the oldest: the one
// that drops the oldest generation to expired ids and packs the current
// one.
func BenchmarkRotate(b *testing.B) {
	const n = 200_000
	ids := make([]string, 2*n)
	for i := range ids {
		ids[i] = fmt.Sprintf("order-%018d", i)
	}
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	for b.Loop() {
		b.StopTimer()
		c, err := NewCoordinator(cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, id := range ids[:n] {
			c.finish(id, finished{committed: true, attempt: 1})
		}
		for range Generations - 1 {
			c.rotate()
		}
		for _, id := range ids[n:] {
			c.finish(id, finished{committed: true, attempt: 1})
		}
		b.StartTimer()
		c.rotate()
		if c.expiredN != n {
			b.Fatalf("%d expired, want %d", c.expiredN, n)
		}
	}
}

// BenchmarkNewIDCheck measures what a new transaction id costs the
// coordinator's tables before it runs (Propose: is the outcome retained,
// is the id expired), with every generation and expired set full: 8
// generations and 7 expired sets of 100,000 ids each, the ids absent.
func BenchmarkNewIDCheck(b *testing.B) {
	const n = 100_000
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	c, err := NewCoordinator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for g := range 2*Generations - 1 {
		for i := range n {
			c.finish(fmt.Sprintf("order-%02d-%018d", g, i), finished{committed: true, attempt: 1})
		}
		if g < 2*Generations-2 {
			c.rotate()
		}
	}
	if st := c.RetentionStats(); st.Current+st.Previous != Generations*n || st.Expired != (Generations-1)*n {
		b.Fatalf("tables %+v", st)
	}
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("fresh-%02d-%018d", i%100, i)
	}
	i := 0
	for b.Loop() {
		id := ids[i&(len(ids)-1)]
		if c.known(id) || c.expired(id) {
			b.Fatalf("%s found", id)
		}
		i++
	}
}

// TestIdleCoordinatorLogsNoCheckpoint: a coordinator that holds nothing
// (no transaction, outcome or expired id) does not rotate, so it logs no
// CHECKPOINT every span; one that holds an outcome rotates until the
// outcome and then its id are gone, and then stops.
func TestIdleCoordinatorLogsNoCheckpoint(t *testing.T) {
	const w = 14
	var l memLog
	c := retainCoord(t, &l, w)
	checkpoints := func() int {
		n := 0
		for _, r := range l.recs {
			if r.Type == RecCheckpoint {
				n++
			}
		}
		return n
	}
	ticks(c, &l, 10*w)
	if n := checkpoints(); n != 0 {
		t.Fatalf("an empty coordinator logged %d checkpoints in %d ticks", n, 10*w)
	}
	commitOne(t, c, &l, "t1")
	span := int(GenerationTicks(w))
	ticks(c, &l, (2*Generations-1)*span)
	if n := checkpoints(); n != 2*Generations-1 {
		t.Fatalf("%d checkpoints while t1's outcome and id were kept; want %d", n, 2*Generations-1)
	}
	if st := c.RetentionStats(); st.Current+st.Previous+st.Expired != 0 {
		t.Fatalf("t1 still held: %+v", st)
	}
	ticks(c, &l, 10*w)
	if n := checkpoints(); n != 2*Generations-1 {
		t.Fatalf("%d checkpoints after everything was dropped; want still %d", n, 2*Generations-1)
	}
}
