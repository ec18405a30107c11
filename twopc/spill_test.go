package twopc

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// spillSeed returns a random seed, or SPILL_SEED's to replay a failure.
func spillSeed(t *testing.T) uint64 {
	if s := os.Getenv("SPILL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SPILL_SEED=%q: %v", s, err)
		}
		return seed
	}
	return rand.Uint64()
}

// spillStore is an in-memory TableSpill and TableSource. Every call keeps
// a copy of what it was given under a file name of its own, so that every
// snapshot encoded through it stays readable. It also checks the promise
// the real spill (node.Tables) builds on: a chunk given again at the same
// address, at least as long, still holds the bytes it held when it was
// last given (it was only grown past them); a violation is reported as a
// test error.
type spillStore struct {
	t      testing.TB
	files  map[string][][]byte
	hashes map[string][]uint64
	seen   map[uint64][]spillMark // per table id: its chunks as last given
	refs   []TableRef             // every ref handed out, in order
	calls  int
	// grown counts the chunks given again at the same address, longer or
	// not (the cases the promise is about).
	grown int
}

type spillMark struct {
	p    *byte
	data []byte // a copy of the chunk as it was given
}

func newSpillStore(t testing.TB) *spillStore {
	return &spillStore{t: t, files: map[string][][]byte{}, hashes: map[string][]uint64{}, seen: map[uint64][]spillMark{}}
}

func (s *spillStore) Table(id uint64, chunks [][]byte, n int) (TableRef, error) {
	s.calls++
	prev := s.seen[id]
	marks := make([]spillMark, len(chunks))
	cs := make([][]byte, len(chunks))
	var size int64
	for i, c := range chunks {
		p := unsafe.SliceData(c)
		if i < len(prev) && prev[i].p == p && len(prev[i].data) <= len(c) {
			s.grown++
			if old := prev[i].data; !bytes.Equal(old, c[:len(old)]) {
				s.t.Errorf("table %d, chunk %d: given again at the same address with its first %d bytes changed (a spill writing only what grew would lose the change)", id, i, len(old))
			}
		}
		marks[i] = spillMark{p: p, data: bytes.Clone(c)}
		cs[i] = bytes.Clone(c)
		size += int64(len(c))
	}
	s.seen[id] = marks
	name := fmt.Sprintf("tab-%d-%d", id, s.calls)
	s.files[name] = cs
	ref := TableRef{File: name, Len: size, Chunks: len(chunks), N: n}
	s.refs = append(s.refs, ref)
	return ref, nil
}

func (s *spillStore) Hashes(id uint64, hs []uint64) (TableRef, error) {
	s.calls++
	name := fmt.Sprintf("tab-%d-%d", id, s.calls)
	s.hashes[name] = slices.Clone(hs)
	ref := TableRef{File: name, Len: 8 * int64(len(hs)), Chunks: len(hs), N: len(hs)}
	s.refs = append(s.refs, ref)
	return ref, nil
}

func (s *spillStore) Chunks(ref TableRef, fn func([]byte) error) error {
	cs, ok := s.files[ref.File]
	if !ok {
		return fmt.Errorf("no table file %s", ref.File)
	}
	if len(cs) != ref.Chunks {
		return fmt.Errorf("table file %s: %d chunks, the ref says %d", ref.File, len(cs), ref.Chunks)
	}
	for _, c := range cs {
		// A copy of its own: the restored table adopts it and may
		// change it in place.
		if err := fn(bytes.Clone(c)); err != nil {
			return err
		}
	}
	return nil
}

func (s *spillStore) hashesOf(ref TableRef) ([]uint64, error) {
	hs, ok := s.hashes[ref.File]
	if !ok {
		return nil, fmt.Errorf("no expired set file %s", ref.File)
	}
	return slices.Clone(hs), nil
}

// spillSource is s as a TableSource (its Hashes is the spill's).
type spillSource struct{ s *spillStore }

func (r spillSource) Chunks(ref TableRef, fn func([]byte) error) error { return r.s.Chunks(ref, fn) }
func (r spillSource) Hashes(ref TableRef) ([]uint64, error)            { return r.s.hashesOf(ref) }

// spillOutcome is what a coordinator remembers of a finished transaction.
type spillOutcome struct {
	committed bool
	attempt   uint32
	reason    string
}

// coordModel is what a coordinator's outcome tables hold.
type coordModel struct {
	cur   map[string]spillOutcome
	older []map[string]spillOutcome // the earlier generations, oldest first
	exps  []map[string]bool         // the expired sets, oldest first
}

func (m coordModel) clone() coordModel {
	c := coordModel{cur: maps.Clone(m.cur)}
	for _, g := range m.older {
		c.older = append(c.older, maps.Clone(g))
	}
	for _, e := range m.exps {
		c.exps = append(c.exps, maps.Clone(e))
	}
	return c
}

// rotate is Coordinator.rotate on the model.
func (m *coordModel) rotate() {
	if len(m.older) == Generations-1 {
		e := map[string]bool{}
		for tx := range m.older[0] {
			e[tx] = true
		}
		m.exps = append(m.exps, e)
		m.older = m.older[1:]
	}
	if len(m.exps) > Generations-1 {
		m.exps = m.exps[1:]
	}
	m.older = append(m.older, m.cur)
	m.cur = map[string]spillOutcome{}
}

// spillReason returns an abort reason: none, short, or (rarely) larger
// than a chunk, so that the entry gets a chunk of its own.
func spillReason(rng *rand.Rand) string {
	switch k := rng.IntN(200); {
	case k == 0:
		return strings.Repeat(fmt.Sprintf("big reason %d ", rng.IntN(1000)), 5000) // ~70 KiB
	case k < 80:
		return fmt.Sprintf("voted no: rule %d", rng.IntN(50))
	}
	return ""
}

// spillAttempt returns an attempt number of one to four uvarint bytes.
func spillAttempt(rng *rand.Rand) uint32 {
	switch rng.IntN(10) {
	case 0:
		return uint32(1 + rng.IntN(1<<20))
	case 1:
		return uint32(128 + rng.IntN(1000))
	}
	return uint32(1 + rng.IntN(3))
}

// spillCapture is a snapshot captured on the loop and encoded later.
type spillCapture struct {
	step   int
	model  coordModel
	active []string
	enc    func(TableSpill) ([]byte, error)
	inline []byte
	spill  []byte
	refs   []TableRef // what the spill handed out for it
}

// TestCoordinatorSpillRoundTrip: a coordinator's snapshot encoded through
// a TableSpill and restored through its TableSource holds what the inline
// snapshot of the same capture holds, and what the tables held at the
// capture: every outcome (state, attempt, reason) in its generation, the
// expired ids, the unfinished transactions, the retention stats. Random
// outcomes (replaced in place and not, reasons larger than a chunk,
// rotations that make a previous generation and an expired set) are
// finished between captures, and each capture is encoded later, after
// more changes (the capture shares the tables' chunks, copy on write).
// CoordinatorSnapshotTables names exactly the refs the spill handed out,
// none for an inline snapshot; restoring a spill snapshot with no source
// fails.
func TestCoordinatorSpillRoundTrip(t *testing.T) {
	seed := spillSeed(t)
	for run := range uint64(3) {
		coordSpillRun(t, seed+run)
	}
}

func coordSpillRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	var l memLog
	c := retainCoord(t, &l, 1<<40) // rotations only where the test makes them
	store := newSpillStore(t)
	m := coordModel{cur: map[string]spillOutcome{}}
	var ids, active, curIDs []string
	var caps []*spillCapture
	encode := func(cp *spillCapture) {
		before := len(store.refs)
		var err error
		if cp.spill, err = cp.enc(store); err != nil {
			t.Fatalf("seed %d: spill encoding of the capture at step %d: %v", seed, cp.step, err)
		}
		cp.refs = slices.Clone(store.refs[before:])
		if cp.inline, err = cp.enc(nil); err != nil {
			t.Fatalf("seed %d: inline encoding of the capture at step %d: %v", seed, cp.step, err)
		}
	}
	capture := func(step int) {
		enc, err := c.SnapshotDeferredSpill()
		if err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		caps = append(caps, &spillCapture{step: step, model: m.clone(), active: slices.Clone(active), enc: enc})
	}
	const steps = 1200
	for step := range steps {
		switch k := rng.IntN(100); {
		case k < 55:
			tx := fmt.Sprintf("o%d-%d", seed, step)
			if rng.IntN(3) == 0 {
				tx += strings.Repeat("x", rng.IntN(40)) // ids of many lengths
			}
			o := spillOutcome{committed: rng.IntN(3) > 0, attempt: spillAttempt(rng)}
			if !o.committed {
				o.reason = spillReason(rng)
			}
			c.finish(tx, finished{committed: o.committed, attempt: o.attempt, reason: o.reason})
			m.cur[tx] = o
			ids = append(ids, tx)
			curIDs = append(curIDs, tx)
		case k < 80 && len(curIDs) > 0:
			// Replace an outcome of the current generation: the same
			// reason and a number that fits changes it in place (a
			// shared chunk is copied first), anything else marks the
			// entry dead and appends another.
			tx := curIDs[rng.IntN(len(curIDs))]
			o := m.cur[tx]
			switch rng.IntN(3) {
			case 0:
				o.attempt = max(1, o.attempt^1)
			case 1:
				o.committed = !o.committed
				o.attempt = spillAttempt(rng)
			default:
				o.reason = spillReason(rng)
			}
			c.finish(tx, finished{committed: o.committed, attempt: o.attempt, reason: o.reason})
			m.cur[tx] = o
		case k < 83:
			c.rotate()
			m.rotate()
			curIDs = nil
		case k < 86 && len(active) < 20:
			tx := fmt.Sprintf("run%d-%d", seed, step)
			if err := c.Propose(tx, []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}}); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			take(&l, c)
			active = append(active, tx)
		case k < 90:
			capture(step)
		}
		for _, cp := range caps {
			if cp.spill == nil && rng.IntN(8) == 0 {
				encode(cp)
			}
		}
	}
	capture(steps)
	for _, cp := range caps {
		if cp.spill == nil {
			encode(cp)
		}
	}
	if store.grown == 0 {
		t.Fatalf("seed %d: no chunk was ever given to the spill again at the same address: the test does not exercise growth", seed)
	}
	ids = append(ids, "never-seen", "")
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	fresh := func() *Coordinator {
		r, err := NewCoordinator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for ci, cp := range caps {
		what := fmt.Sprintf("seed %d, capture %d of %d (step %d)", seed, ci, len(caps), cp.step)
		inl, sp := fresh(), fresh()
		if err := inl.RestoreSnapshot(cp.inline); err != nil {
			t.Fatalf("%s: inline snapshot: %v", what, err)
		}
		if err := sp.RestoreSnapshotFrom(cp.spill, spillSource{store}); err != nil {
			t.Fatalf("%s: spill snapshot: %v", what, err)
		}
		checkCoordModel(t, what+", inline", inl, cp.model, cp.active)
		checkCoordModel(t, what+", spill", sp, cp.model, cp.active)
		if a, b := inl.RetentionStats(), sp.RetentionStats(); a != b || inl.Epoch() != sp.Epoch() || inl.Inflight() != sp.Inflight() {
			t.Fatalf("%s: spill restore: stats %+v, epoch %d, %d in flight; inline restore: %+v, %d, %d", what, b, sp.Epoch(), sp.Inflight(), a, inl.Epoch(), inl.Inflight())
		}
		for _, tx := range ids {
			f1, ok1 := inl.finishedTx(tx)
			f2, ok2 := sp.finishedTx(tx)
			s1, k1 := inl.State(tx)
			s2, k2 := sp.State(tx)
			if f1 != f2 || ok1 != ok2 || s1 != s2 || k1 != k2 || inl.Expired(tx) != sp.Expired(tx) {
				t.Fatalf("%s: %q after the spill restore: %+v %v, %v %v, expired %v; after the inline restore: %+v %v, %v %v, expired %v",
					what, tx, f2, ok2, s2, k2, sp.Expired(tx), f1, ok1, s1, k1, inl.Expired(tx))
			}
		}
		// The tables the snapshot names are exactly those handed out.
		refs, err := CoordinatorSnapshotTables(cp.spill)
		if err != nil || !slices.Equal(refs, cp.refs) {
			t.Fatalf("%s: CoordinatorSnapshotTables = %v, %v; the spill handed out %v", what, refs, err, cp.refs)
		}
		if refs, err := CoordinatorSnapshotTables(cp.inline); err != nil || len(refs) != 0 {
			t.Fatalf("%s: CoordinatorSnapshotTables of the inline snapshot = %v, %v; want none", what, refs, err)
		}
		if len(cp.refs) > 0 {
			err := fresh().RestoreSnapshot(cp.spill)
			if err == nil || !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), errNoSource.Error()) {
				t.Fatalf("%s: a snapshot keeping %d tables in files restored with no source: %v; want an ErrDecode saying %q", what, len(cp.refs), err, errNoSource)
			}
		}
	}
}

// checkCoordModel checks that c holds exactly the tables of m and the
// unfinished transactions active.
func checkCoordModel(t *testing.T, what string, c *Coordinator, m coordModel, active []string) {
	t.Helper()
	st := c.RetentionStats()
	prev, exp := 0, 0
	for _, g := range m.older {
		prev += len(g)
	}
	for _, e := range m.exps {
		exp += len(e)
	}
	if st.Current != len(m.cur) || st.Previous != prev || st.Expired != exp || len(c.older) != len(m.older) || len(c.exps) != len(m.exps) {
		t.Fatalf("%s: generations %+v (%d earlier, %d expired sets), want %d current, %d earlier in %d, %d expired in %d sets",
			what, st, len(c.older), len(c.exps), len(m.cur), prev, len(m.older), exp, len(m.exps))
	}
	if c.Inflight() != len(active) {
		t.Fatalf("%s: %d in flight, want %d", what, c.Inflight(), len(active))
	}
	for _, tx := range active {
		if s, ok := c.State(tx); !ok || s != CoordCollecting {
			t.Fatalf("%s: unfinished %s is %v (known %v), want COLLECTING", what, tx, s, ok)
		}
	}
	gen := func(name string, tab *txTable, want map[string]spillOutcome) {
		for tx, o := range want {
			v, reason, ok := tab.Get(tx)
			got := spillOutcome{committed: v.state == 1, attempt: v.a, reason: reason}
			if !ok || got != o || v.state > 1 || v.b != 0 {
				t.Fatalf("%s: %s generation: %q = %+v (found %v, value %+v), want %+v", what, name, tx, got, ok, v, o)
			}
		}
	}
	gen("current", c.done, m.cur)
	for i, g := range m.older {
		gen(fmt.Sprintf("earlier %d", i), c.older[i], g)
	}
	for _, e := range m.exps {
		for tx := range e {
			retained := false
			for _, g := range append(slices.Clone(m.older), m.cur) {
				_, in := g[tx]
				retained = retained || in
			}
			if !retained && !c.Expired(tx) {
				t.Fatalf("%s: %q must be expired", what, tx)
			}
		}
	}
}

// partBranch is what a participant remembers of a finished branch.
type partBranch struct {
	state   BranchState
	attempt uint32
	gen     uint32
	reason  string
}

// TestParticipantSpillRoundTrip is TestCoordinatorSpillRoundTrip for a
// participant: its generations of finished branches (committed and
// aborted, with reasons, generations, replaced values) and its prepared
// branches, captured between random changes and encoded later, restore
// through the spill's TableSource to what the inline snapshot restores
// and what the tables held at the capture; ParticipantSnapshotTables
// names exactly the refs the spill handed out.
func TestParticipantSpillRoundTrip(t *testing.T) {
	seed := spillSeed(t)
	for run := range uint64(3) {
		partSpillRun(t, seed+run)
	}
}

func partSpillRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 13))
	var l memLog
	res := newKV()
	cfg := testPartConfig("a")
	p, err := NewParticipant(cfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	store := newSpillStore(t)
	type capture struct {
		step     int
		cur      map[string]partBranch
		older    []map[string]partBranch // oldest first
		forgot   bool
		maxEpoch uint64
		prepared []string
		enc      func([]byte, TableSpill) ([]byte, error)
		inline   []byte
		spill    []byte
		refs     []TableRef
	}
	cur := map[string]partBranch{}
	var older []map[string]partBranch
	forgot := false
	var ids, curIDs, prepared []string
	var caps []*capture
	encode := func(cp *capture) {
		before := len(store.refs)
		var err error
		// With a prefix: the encoding appends to what it is given.
		if cp.spill, err = cp.enc([]byte("prefix"), store); err != nil {
			t.Fatalf("seed %d: spill encoding of the capture at step %d: %v", seed, cp.step, err)
		}
		if !bytes.HasPrefix(cp.spill, []byte("prefix")) {
			t.Fatalf("seed %d: the spill encoding did not append to the bytes it was given", seed)
		}
		cp.spill = cp.spill[len("prefix"):]
		cp.refs = slices.Clone(store.refs[before:])
		if cp.inline, err = cp.enc(nil, nil); err != nil {
			t.Fatalf("seed %d: inline encoding of the capture at step %d: %v", seed, cp.step, err)
		}
	}
	take1 := func(step int) {
		enc, err := p.SnapshotDeferredSpill()
		if err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		var olderCopy []map[string]partBranch
		for _, g := range older {
			olderCopy = append(olderCopy, maps.Clone(g))
		}
		caps = append(caps, &capture{step: step, cur: maps.Clone(cur), older: olderCopy, forgot: forgot, maxEpoch: p.maxEpoch, prepared: slices.Clone(prepared), enc: enc})
	}
	put := func(tx string, b partBranch) {
		p.finished.Put(tx, txVal{state: uint8(b.state), a: b.attempt, b: b.gen}, b.reason)
		cur[tx] = b
	}
	const steps = 1200
	for step := range steps {
		switch k := rng.IntN(100); {
		case k < 55:
			tx := fmt.Sprintf("b%d-%d", seed, step)
			b := partBranch{state: BranchCommitted, attempt: spillAttempt(rng), gen: uint32(rng.IntN(3))}
			if rng.IntN(3) == 0 {
				b.state, b.reason = BranchAborted, spillReason(rng)
			}
			put(tx, b)
			ids = append(ids, tx)
			curIDs = append(curIDs, tx)
		case k < 80 && len(curIDs) > 0:
			tx := curIDs[rng.IntN(len(curIDs))]
			b := cur[tx]
			switch rng.IntN(3) {
			case 0:
				b.attempt = max(1, b.attempt^1) // fits in place
			case 1:
				b.gen = uint32(rng.IntN(1 << 20))
			default:
				b.state, b.reason = BranchAborted, spillReason(rng)
			}
			put(tx, b)
		case k < 83:
			p.rotate()
			if len(older) == Generations-1 {
				forgot = forgot || len(older[0]) > 0
				older = older[1:]
			}
			older, cur, curIDs = append(older, cur), map[string]partBranch{}, nil
		case k < 86 && len(prepared) < 20:
			tx := fmt.Sprintf("prep%d-%d", seed, step)
			p.Step(prepareMsg(tx, "a", "k"+tx, 1))
			take(&l, p)
			if st, ok := p.Branch(tx); !ok || st != BranchPrepared {
				t.Fatalf("seed %d: %s not prepared: %v %v", seed, tx, st, ok)
			}
			prepared = append(prepared, tx)
		case k < 90:
			take1(step)
		}
		for _, cp := range caps {
			if cp.spill == nil && rng.IntN(8) == 0 {
				encode(cp)
			}
		}
	}
	take1(steps)
	for _, cp := range caps {
		if cp.spill == nil {
			encode(cp)
		}
	}
	if store.grown == 0 {
		t.Fatalf("seed %d: no chunk was ever given to the spill again at the same address: the test does not exercise growth", seed)
	}
	ids = append(ids, "never-seen")
	fresh := func(prepared []string) *Participant {
		r := newKV()
		for _, tx := range prepared {
			r.prepared[tx] = "k" + tx
		}
		q, err := NewParticipant(cfg, multiKV{r})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	for ci, cp := range caps {
		what := fmt.Sprintf("seed %d, capture %d of %d (step %d)", seed, ci, len(caps), cp.step)
		inl, sp := fresh(cp.prepared), fresh(cp.prepared)
		if err := inl.RestoreSnapshot(cp.inline); err != nil {
			t.Fatalf("%s: inline snapshot: %v", what, err)
		}
		if err := sp.RestoreSnapshotFrom(cp.spill, spillSource{store}); err != nil {
			t.Fatalf("%s: spill snapshot: %v", what, err)
		}
		for _, q := range []struct {
			how string
			p   *Participant
		}{{"inline", inl}, {"spill", sp}} {
			n, _ := q.p.FinishedStats()
			want := len(cp.cur)
			for _, g := range cp.older {
				want += len(g)
			}
			if n != want {
				t.Fatalf("%s, %s: %d finished branches remembered, want %d", what, q.how, n, want)
			}
			if q.p.forgot != cp.forgot || q.p.InDoubt() != len(cp.prepared) || q.p.maxEpoch != cp.maxEpoch {
				t.Fatalf("%s, %s: forgot %v, %d in doubt, epoch %d; want forgot %v, %d in doubt, epoch %d",
					what, q.how, q.p.forgot, q.p.InDoubt(), q.p.maxEpoch, cp.forgot, len(cp.prepared), cp.maxEpoch)
			}
			for _, tx := range cp.prepared {
				if st, ok := q.p.Branch(tx); !ok || st != BranchPrepared {
					t.Fatalf("%s, %s: %s is %v (known %v), want PREPARED", what, q.how, tx, st, ok)
				}
			}
			gens := append(slices.Clone(cp.older), cp.cur)
			for gen, want := range gens {
				for tx, w := range want {
					newer := false
					for _, g := range gens[gen+1:] {
						_, in := g[tx]
						newer = newer || in
					}
					if newer {
						continue
					}
					b := q.p.branchOf(tx)
					if b == nil || (partBranch{b.state, b.attempt, b.gen, b.reason}) != w {
						t.Fatalf("%s, %s: %q = %+v, want %+v", what, q.how, tx, b, w)
					}
				}
			}
		}
		for _, tx := range ids {
			b1, b2 := inl.branchOf(tx), sp.branchOf(tx)
			if (b1 == nil) != (b2 == nil) || b1 != nil && (b1.state != b2.state || b1.attempt != b2.attempt || b1.gen != b2.gen || b1.reason != b2.reason) {
				t.Fatalf("%s: %q after the spill restore: %+v; after the inline restore: %+v", what, tx, b2, b1)
			}
		}
		refs, err := ParticipantSnapshotTables(cp.spill)
		if err != nil || !slices.Equal(refs, cp.refs) {
			t.Fatalf("%s: ParticipantSnapshotTables = %v, %v; the spill handed out %v", what, refs, err, cp.refs)
		}
		if refs, err := ParticipantSnapshotTables(cp.inline); err != nil || len(refs) != 0 {
			t.Fatalf("%s: ParticipantSnapshotTables of the inline snapshot = %v, %v; want none", what, refs, err)
		}
		if len(cp.refs) > 0 {
			err := fresh(cp.prepared).RestoreSnapshot(cp.spill)
			if err == nil || !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), errNoSource.Error()) {
				t.Fatalf("%s: a snapshot keeping %d tables in files restored with no source: %v; want an ErrDecode saying %q", what, len(cp.refs), err, errNoSource)
			}
		}
	}
}

// TestSnapshotTablesNamesRefs: the refs CoordinatorSnapshotTables and
// ParticipantSnapshotTables read out of a snapshot are those the spill
// handed out, in the order the snapshot holds them (a coordinator: the
// current generation, the previous one, the expired set; a participant:
// the previous generation, then the current), with unfinished or prepared
// transactions before them; an empty table is inline and named by none;
// an inline snapshot names none.
func TestSnapshotTablesNamesRefs(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 1<<40)
	fill := func(prefix string, n int) {
		for i := range n {
			c.finish(fmt.Sprintf("%s%d", prefix, i), finished{committed: i%2 == 0, attempt: 1, reason: "r"})
		}
	}
	if err := c.Propose("inflight", []Branch{{Node: "a", Op: []byte("k")}, {Node: "b", Op: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	take(&l, c)
	coordRefs := func(what string, want int) {
		t.Helper()
		enc, err := c.SnapshotDeferredSpill()
		if err != nil {
			t.Fatal(err)
		}
		s := newSpillStore(t)
		b, err := enc(s)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := CoordinatorSnapshotTables(b)
		if err != nil || !slices.Equal(refs, s.refs) || len(refs) != want {
			t.Fatalf("%s: CoordinatorSnapshotTables = %v, %v; the spill handed out %v, want %d", what, refs, err, s.refs, want)
		}
		inline, _ := enc(nil)
		if refs, err := CoordinatorSnapshotTables(inline); err != nil || refs != nil {
			t.Fatalf("%s: an inline snapshot names %v, %v", what, refs, err)
		}
	}
	coordRefs("nothing finished", 0)
	fill("g0-", 50)
	coordRefs("a current generation", 1)
	c.rotate()
	coordRefs("an empty current generation, an earlier one", 1)
	fill("g1-", 40)
	coordRefs("two generations", 2)
	for range Generations - 1 { // generation 0 expires; 1 is the oldest kept, the others empty
		c.rotate()
	}
	fill("g2-", 30)
	coordRefs("two generations and an expired set", 3)
	if st := c.RetentionStats(); st.Expired != 50 || st.Previous != 40 || st.Current != 30 {
		t.Fatalf("the coordinator's tables: %+v", st)
	}
	// The refs are in the order the snapshot holds the tables: the
	// generations oldest first, then the expired set (of the 50 outcomes
	// of generation 0).
	enc, _ := c.SnapshotDeferredSpill()
	s := newSpillStore(t)
	b, _ := enc(s)
	refs, _ := CoordinatorSnapshotTables(b)
	if len(refs) != 3 || refs[0].N != 40 || refs[1].N != 30 || refs[2].N != 50 || s.hashes[refs[2].File] == nil {
		t.Fatalf("refs %+v: want the earlier generation (40), the current one (30), the expired set (50 hashes)", refs)
	}

	res := newKV()
	p, err := NewParticipant(testPartConfig("a"), multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	take(&l, p)
	p.Step(prepareMsg("prep", "a", "kp", 1))
	take(&l, p)
	partRefs := func(what string, wantN ...int) {
		t.Helper()
		enc, err := p.SnapshotDeferredSpill()
		if err != nil {
			t.Fatal(err)
		}
		s := newSpillStore(t)
		b, err := enc(nil, s)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := ParticipantSnapshotTables(b)
		var ns []int
		for _, r := range refs {
			ns = append(ns, r.N)
		}
		if err != nil || !slices.Equal(refs, s.refs) || !slices.Equal(ns, wantN) {
			t.Fatalf("%s: ParticipantSnapshotTables = %v, %v; the spill handed out %v, want tables of %v entries", what, refs, err, s.refs, wantN)
		}
		inline, _ := enc(nil, nil)
		if refs, err := ParticipantSnapshotTables(inline); err != nil || refs != nil {
			t.Fatalf("%s: an inline snapshot names %v, %v", what, refs, err)
		}
	}
	partRefs("nothing finished")
	for i := range 20 {
		p.finished.Put(fmt.Sprintf("f%d", i), txVal{state: uint8(BranchCommitted), a: 1}, "")
	}
	partRefs("a current generation", 20)
	p.rotate()
	partRefs("a previous generation", 20)
	for i := range 7 {
		p.finished.Put(fmt.Sprintf("h%d", i), txVal{state: uint8(BranchAborted), a: 2, b: 1}, "no")
	}
	partRefs("two generations", 20, 7)

	// A snapshot of an older version names no table (it keeps them
	// inline); no bytes are an error; a cut snapshot never names all its
	// tables.
	if refs, err := CoordinatorSnapshotTables([]byte{coordSnapVersionV2}); err != nil || refs != nil {
		t.Fatalf("CoordinatorSnapshotTables of a version 2 snapshot = %v, %v; want none", refs, err)
	}
	if refs, err := ParticipantSnapshotTables([]byte{snapshotVersionV2}); err != nil || refs != nil {
		t.Fatalf("ParticipantSnapshotTables of a version 2 snapshot = %v, %v; want none", refs, err)
	}
	if _, err := CoordinatorSnapshotTables(nil); err == nil {
		t.Fatal("CoordinatorSnapshotTables of no bytes: no error")
	}
	if _, err := ParticipantSnapshotTables(nil); err == nil {
		t.Fatal("ParticipantSnapshotTables of no bytes: no error")
	}
	enc2, _ := c.SnapshotDeferredSpill()
	full, _ := enc2(newSpillStore(t))
	for i := 1; i < len(full); i++ {
		refs, err := CoordinatorSnapshotTables(full[:i])
		if err == nil && len(refs) == 3 {
			t.Fatalf("a coordinator snapshot cut to %d of %d bytes names all its tables: %v", i, len(full), refs)
		}
	}
}

// failingSpill fails every call.
type failingSpill struct{ err error }

func (f failingSpill) Table(uint64, [][]byte, int) (TableRef, error) { return TableRef{}, f.err }
func (f failingSpill) Hashes(uint64, []uint64) (TableRef, error)     { return TableRef{}, f.err }

// brokenSource serves a store's tables with one thing wrong.
type brokenSource struct {
	s    *spillStore
	mode string
}

func (b brokenSource) Chunks(ref TableRef, fn func([]byte) error) error {
	switch b.mode {
	case "missing":
		return fmt.Errorf("%s: %w", ref.File, errors.New("no such file"))
	case "fewer":
		// The chunks minus the last: fewer entries than the ref says.
		cs := b.s.files[ref.File]
		for _, c := range cs[:len(cs)-1] {
			if err := fn(bytes.Clone(c)); err != nil {
				return err
			}
		}
		return nil
	case "garbage":
		return fn([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return b.s.Chunks(ref, fn)
}

func (b brokenSource) Hashes(ref TableRef) ([]uint64, error) {
	hs, err := b.s.hashesOf(ref)
	if b.mode == "short hashes" && len(hs) > 0 {
		hs = hs[1:]
	}
	return hs, err
}

// TestSpillFailures: a spill's error fails the encoding (no bytes, the
// spill's error); a restore whose source fails, serves fewer entries or
// hashes than the snapshot says, or serves garbage, fails with an error;
// every cut of a spill snapshot is refused.
func TestSpillFailures(t *testing.T) {
	var l memLog
	c := retainCoord(t, &l, 1<<40)
	for g := range 3 {
		for i := range 300 {
			c.finish(fmt.Sprintf("g%d-%d", g, i), finished{committed: true, attempt: 1})
		}
		switch g {
		case 0: // generation 0 expires
			for range Generations {
				c.rotate()
			}
		case 1:
			c.rotate()
		}
	}
	if st := c.RetentionStats(); st.Expired != 300 || st.Previous != 300 || st.Current != 300 {
		t.Fatalf("the coordinator's tables: %+v", st)
	}
	enc, err := c.SnapshotDeferredSpill()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk on fire")
	if b, err := enc(failingSpill{boom}); !errors.Is(err, boom) || b != nil {
		t.Fatalf("a coordinator snapshot through a failing spill: %d bytes, %v; want the spill's error", len(b), err)
	}
	store := newSpillStore(t)
	data, err := enc(store)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testCoordConfig()
	cfg.Retention = 1 << 40
	for _, mode := range []string{"missing", "fewer", "garbage", "short hashes"} {
		m, _ := NewCoordinator(cfg)
		if err := m.RestoreSnapshotFrom(data, brokenSource{store, mode}); err == nil {
			t.Fatalf("a coordinator restored through a source serving %s", mode)
		}
	}
	m, _ := NewCoordinator(cfg)
	if err := m.RestoreSnapshotFrom(data, brokenSource{store, "none"}); err != nil {
		t.Fatalf("the source with nothing wrong: %v", err)
	}
	// Every cut of a spill snapshot is refused, never a panic.
	for i := range data {
		m, _ := NewCoordinator(cfg)
		if err := m.RestoreSnapshotFrom(data[:i], spillSource{store}); err == nil {
			t.Fatalf("a spill snapshot cut to %d of %d bytes restored", i, len(data))
		}
	}

	p, err := NewParticipant(testPartConfig("a"), multiKV{newKV()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		p.finished.Put(fmt.Sprintf("f%d", i), txVal{state: uint8(BranchCommitted), a: 1}, "")
	}
	penc, err := p.SnapshotDeferredSpill()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := penc([]byte("x"), failingSpill{boom}); !errors.Is(err, boom) || b != nil {
		t.Fatalf("a participant snapshot through a failing spill: %d bytes, %v; want the spill's error", len(b), err)
	}
	pdata, err := penc(nil, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"missing", "fewer", "garbage"} {
		q, _ := NewParticipant(testPartConfig("a"), multiKV{newKV()})
		if err := q.RestoreSnapshotFrom(pdata, brokenSource{store, mode}); err == nil {
			t.Fatalf("a participant restored through a source serving %s", mode)
		}
	}
}

// adoptAll accepts every entry.
func adoptAll(string, txVal) error { return nil }

type adoptWant struct {
	v    txVal
	text string
}

// adoptFilled returns a table filled with Put (new keys, values replaced
// in place and not, dead entries, texts, an empty key, entries larger
// than a chunk) and what it holds.
func adoptFilled(seed uint64, n int) (*txTable, map[string]adoptWant) {
	rng := rand.New(rand.NewPCG(seed, 17))
	tab := newTxTable()
	want := map[string]adoptWant{}
	put := func(k string, v txVal, text string) {
		tab.Put(k, v, text)
		want[k] = adoptWant{v, text}
	}
	for i := range n {
		k := fmt.Sprintf("key-%d", i)
		v := txVal{state: uint8(rng.IntN(20)), a: uint32(rng.IntN(300)), b: uint32(rng.IntN(3))}
		text := ""
		switch rng.IntN(10) {
		case 0:
			text = fmt.Sprintf("text %d", rng.IntN(1000))
		case 1:
			if rng.IntN(100) == 0 {
				text = strings.Repeat("T", 70<<10) // a chunk of its own
			}
		}
		put(k, v, text)
		if i > 0 && rng.IntN(4) == 0 {
			// Replace an earlier key: in place (same text, a number
			// that fits) or not (another text, a wider number).
			k := fmt.Sprintf("key-%d", rng.IntN(i))
			w := want[k]
			if rng.IntN(2) == 0 {
				w.v.a = w.v.a &^ 1
			} else {
				w.v.a, w.text = rng.Uint32(), fmt.Sprintf("replaced %d", i)
			}
			put(k, w.v, w.text)
		}
	}
	put("", txVal{state: 1}, "")
	put("big-key-"+strings.Repeat("K", 66<<10), txVal{state: 2, a: 1}, "with text")
	return tab, want
}

func frozenCopies(f txFrozen) [][]byte {
	cs := make([][]byte, len(f.chunks))
	for i, c := range f.chunks {
		cs[i] = bytes.Clone(c)
	}
	return cs
}

func checkAdopted(t *testing.T, what string, tab *txTable, want map[string]adoptWant) {
	t.Helper()
	if tab.Len() != len(want) {
		t.Fatalf("%s: Len %d, want %d", what, tab.Len(), len(want))
	}
	for k, w := range want {
		v, text, ok := tab.Get(k)
		if !ok || v != w.v || text != w.text {
			t.Fatalf("%s: Get(%.30q) = %+v %.30q %v, want %+v %.30q", what, k, v, text, ok, w.v, w.text)
		}
	}
	for _, k := range []string{"absent", "key--1", "key-x"} {
		if tab.Has(k) {
			t.Fatalf("%s: Has(%q) for a key never put", what, k)
		}
	}
}

// TestTxTableAdopt: the chunks of a frozen table, adopted into a fresh one
// (directly, and through the bulk load a table of more chunks than a part
// can number takes), answer every Get as the table did, with the same
// Len; the adopted table then takes new keys and replacements like any
// other, and freezes and adopts again.
func TestTxTableAdopt(t *testing.T) {
	seed := spillSeed(t)
	tab, want := adoptFilled(seed, 4000)
	frozen := tab.freeze()
	if len(frozen.chunks) < 4 {
		t.Fatalf("seed %d: %d chunks; the test wants several", seed, len(frozen.chunks))
	}
	for _, tc := range []struct {
		name      string
		maxChunks int // 0: the default
		hint      int
	}{
		{"direct", 0, frozen.n},
		{"direct, no hint", 0, 0},
		{"bulk, the part full at once", 1, frozen.n},
		{"bulk, sealed parts", 3, frozen.n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			what := fmt.Sprintf("seed %d, %s", seed, tc.name)
			fresh := newTxTable()
			if tc.maxChunks > 0 {
				fresh.maxChunks = tc.maxChunks
			}
			n, err := fresh.adopt(frozenCopies(frozen), tc.hint, adoptAll)
			if err != nil || n != len(want) {
				t.Fatalf("%s: adopt = %d, %v; want %d entries", what, n, err, len(want))
			}
			checkAdopted(t, what, fresh, want)
			// It goes on as a table: new keys, replacements in place
			// and not, then a freeze and another adoption.
			w2 := maps.Clone(want)
			for i := range 500 {
				k := fmt.Sprintf("new-%d", i)
				if i%3 == 0 {
					k = fmt.Sprintf("key-%d", i)
				}
				v := adoptWant{txVal{state: 1, a: uint32(i % 7)}, ""}
				if i%5 == 0 {
					v.text = "later"
				}
				fresh.Put(k, v.v, v.text)
				w2[k] = v
			}
			checkAdopted(t, what+", after more puts", fresh, w2)
			again := newTxTable()
			if _, err := again.adopt(frozenCopies(fresh.freeze()), 0, adoptAll); err != nil {
				t.Fatalf("%s: adopting the adopted table's chunks: %v", what, err)
			}
			checkAdopted(t, what+", adopted again", again, w2)
		})
	}
	// The frozen view itself is unchanged by the adoptions of copies.
	checkAdopted(t, fmt.Sprintf("seed %d, the original", seed), tab, want)
}

// TestTxTableAdoptRefuses: chunks that are not a table's are refused with
// an error naming what is wrong, never loaded: a key live twice (in one
// chunk, in two, through the bulk load), an entry cut short, a number
// past 32 bits, an entry past where a position can point, an entry the
// check refuses. A key dead once and live once is fine.
func TestTxTableAdoptRefuses(t *testing.T) {
	entry := func(key string, v txVal, text string) []byte { return appendEntry(nil, key, v, text) }
	dead := func(b []byte) []byte { b[0] |= txDead; return b }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	one := entry("k", txVal{state: 1, a: 1}, "")
	// An entry that fills the first 64 KiB of a chunk: the next one
	// starts where a position cannot point.
	long := entry(strings.Repeat("L", txChunkMax-4), txVal{state: 1}, "")
	refuseCheck := errors.New("refused by the check")
	for _, tc := range []struct {
		name      string
		chunks    [][]byte
		maxChunks int
		check     func(string, txVal) error
		want      string // in the error; "" : adopted
		n         int
	}{
		{name: "one entry", chunks: [][]byte{one}, n: 1},
		{name: "dead then live", chunks: [][]byte{cat(dead(entry("k", txVal{state: 0}, "x")), one)}, n: 1},
		{name: "live twice in a chunk", chunks: [][]byte{cat(one, entry("k", txVal{state: 0, a: 3}, "t"))}, want: "twice"},
		{name: "live twice in two chunks", chunks: [][]byte{one, cat(entry("j", txVal{}, ""), one)}, want: "twice"},
		{name: "live twice, bulk", chunks: [][]byte{one, entry("j", txVal{}, ""), one}, maxChunks: 2, want: "twice"},
		{name: "live twice, bulk from the start", chunks: [][]byte{cat(one, one)}, maxChunks: 1, want: "twice"},
		{name: "cut short", chunks: [][]byte{one[:len(one)-1]}, want: "past the chunk"},
		{name: "flags only", chunks: [][]byte{{txStateX}}, want: "state byte"},
		{name: "number past 32 bits", chunks: [][]byte{{txHasA, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 'k'}}, want: "bad number"},
		{name: "number never ends", chunks: [][]byte{{txHasA, 0xff, 0xff}}, want: "bad number"},
		{name: "key length past the chunk", chunks: [][]byte{{0, 9, 'k'}}, want: "past the chunk"},
		{name: "an entry past 64 KiB", chunks: [][]byte{cat(long, entry("after", txVal{}, ""))}, want: "past"},
		{name: "an entry past 64 KiB, bulk", chunks: [][]byte{cat(long, entry("after", txVal{}, ""))}, maxChunks: 1, n: 2},
		{name: "refused by the check", chunks: [][]byte{one}, check: func(string, txVal) error { return refuseCheck }, want: refuseCheck.Error()},
		{name: "the check does not see dead entries", chunks: [][]byte{cat(dead(entry("bad", txVal{}, "")), one)},
			check: func(k string, _ txVal) error {
				if k == "bad" {
					return refuseCheck
				}
				return nil
			}, n: 1},
	} {
		tab := newTxTable()
		if tc.maxChunks > 0 {
			tab.maxChunks = tc.maxChunks
		}
		check := tc.check
		if check == nil {
			check = adoptAll
		}
		n, err := tab.adopt(tc.chunks, 1, check)
		switch {
		case tc.want == "" && (err != nil || n != tc.n):
			t.Errorf("%s: adopt = %d, %v; want %d entries", tc.name, n, err, tc.n)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: adopt = %d, %v; want an error saying %q", tc.name, n, err, tc.want)
		case tc.want == "" && tab.Len() != tc.n:
			t.Errorf("%s: Len %d after adopting %d", tc.name, tab.Len(), tc.n)
		}
	}
}

// FuzzAdoptChunks: any bytes, cut into one to three chunks, adopted into
// a fresh table (directly, or through the bulk load when the last bit of
// the shape says so): adopt never panics, and when it succeeds the table
// holds exactly the live entries it reported to the check, each found by
// Get with the value the check saw, and takes new keys afterwards.
func FuzzAdoptChunks(f *testing.F) {
	tab := newTxTable()
	for i := range 150 { // two chunks (1 KiB and part of 2 KiB): small seeds minimize fast
		text := ""
		if i%7 == 0 {
			text = fmt.Sprintf("reason %d", i)
		}
		tab.Put(fmt.Sprintf("k%d", i), txVal{state: uint8(i % 3), a: uint32(i), b: uint32(i % 2)}, text)
		if i%5 == 0 {
			tab.Put(fmt.Sprintf("k%d", i/2), txVal{state: 1, a: uint32(i) << 8}, "again") // dead entries
		}
	}
	fr := tab.freeze()
	var all []byte
	var cuts []int
	for _, c := range fr.chunks {
		if len(all) > 0 {
			cuts = append(cuts, len(all))
		}
		all = append(all, c...)
	}
	// Valid chunks: chunk boundaries as the cuts.
	cut := func(i int) uint32 {
		if i < len(cuts) {
			return uint32(cuts[i])
		}
		return uint32(len(all))
	}
	small := newTxTable()
	small.Put("a", txVal{state: 1, a: 1}, "")
	small.Put("b", txVal{state: 0, a: 2}, "why")
	small.Put("a", txVal{state: 0, a: 300}, "changed") // a dead entry
	small.Put("c", txVal{state: 200, a: 1 << 31, b: 7}, "")
	sf := small.freeze()
	one := sf.chunks[0]
	f.Add(bytes.Clone(one), uint8(0), uint32(0), uint32(0))
	f.Add(bytes.Clone(one), uint8(2), uint32(3), uint32(9))
	f.Add(bytes.Clone(one), uint8(5), uint32(3), uint32(9))
	f.Add(all[:cut(1)], uint8(1), cut(0), cut(1))
	f.Add(all[:cut(1)], uint8(5), cut(0), cut(1))
	f.Add(all, uint8(2), cut(0), cut(1))
	f.Add(all, uint8(6), cut(0), cut(1))
	f.Add(append(bytes.Clone(one), one...), uint8(1), uint32(len(one)), uint32(0)) // every key twice
	f.Add([]byte{txStateX}, uint8(0), uint32(0), uint32(0))
	f.Add([]byte{txHasA | txHasB | txHasText, 0x80, 0x80, 0x00, 1, 1, 1, 'k', 't'}, uint8(0), uint32(0), uint32(0))
	f.Fuzz(adoptChunksCheck)
}

// adoptChunksCheck is FuzzAdoptChunks on one input.
func adoptChunksCheck(t *testing.T, b []byte, shape uint8, at1, at2 uint32) {
	k := 1 + int(shape%3)
	x, y := int(at1)%(len(b)+1), int(at2)%(len(b)+1)
	if x > y {
		x, y = y, x
	}
	var chunks [][]byte
	switch k {
	case 1:
		chunks = [][]byte{b}
	case 2:
		chunks = [][]byte{b[:x], b[x:]}
	default:
		chunks = [][]byte{b[:x], b[x:y], b[y:]}
	}
	for i, c := range chunks {
		chunks[i] = bytes.Clone(c)
	}
	tab := newTxTable()
	if shape&4 != 0 && len(b) <= 32<<10 {
		// The bulk load for two chunks or more, and sealed parts (of a
		// few KiB each here: a lookup tries every part, so a large
		// input would take a quadratic time that says nothing).
		tab.maxChunks = 2
	}
	seen := map[string]txVal{}
	dup := false
	n, err := tab.adopt(chunks, len(b), func(key string, v txVal) error {
		if _, ok := seen[key]; ok {
			dup = true
		}
		seen[strings.Clone(key)] = v
		return nil
	})
	if err != nil {
		return
	}
	if dup {
		t.Fatalf("adopt accepted chunks %x with a key live twice", chunks)
	}
	if n != len(seen) || tab.Len() != n {
		t.Fatalf("adopt reported %d entries, Len %d, the check saw %d keys", n, tab.Len(), len(seen))
	}
	for key, w := range seen {
		v, _, ok := tab.Get(key)
		if !ok || v != w {
			t.Fatalf("adopted key %q: Get = %+v %v, the check saw %+v", key, v, ok, w)
		}
	}
	count := 0
	tab.All(func(key string, v txVal, _ string) bool {
		if w, ok := seen[key]; !ok || w != v {
			t.Fatalf("All gave %q %+v, the check saw %+v (%v)", key, v, w, ok)
		}
		count++
		return true
	})
	if count != n {
		t.Fatalf("All gave %d keys, adopt reported %d", count, n)
	}
	const newKey = "\x00fuzz-new"
	wantLen := n + 1
	if _, was := seen[newKey]; was {
		wantLen = n
	}
	tab.Put(newKey, txVal{state: 1, a: 9}, "t")
	if v, text, ok := tab.Get(newKey); !ok || v != (txVal{state: 1, a: 9}) || text != "t" || tab.Len() != wantLen {
		t.Fatalf("a key put after the adoption: Get = %+v %q %v, Len %d; want Len %d", v, text, ok, tab.Len(), wantLen)
	}
}
