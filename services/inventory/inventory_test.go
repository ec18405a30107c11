package inventory

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

func world() purchase.World {
	return purchase.World{
		Items:    map[string]purchase.Item{"a": {Stock: 10}, "b": {Stock: 5}, "c": {Stock: 0}},
		Accounts: map[string]purchase.Account{"u": {Balance: 100_00}},
	}
}

// line is one item of an order for op.
type line struct {
	item string
	q    int64
}

// op returns the binary operation of an order of tx for lines, at 1.00 an
// item, in the items form (even for one line).
func op(t testing.TB, tx string, lines ...line) []byte {
	t.Helper()
	r := purchase.Request{TxID: tx, UserID: "u", Card: purchase.Card{Last4: "1111", ExpMonth: 12, ExpYear: 2099}}
	for _, l := range lines {
		r.Items = append(r.Items, purchase.LineItem{ItemID: l.item, Quantity: l.q, Price: 100})
		r.Amount += money.Cents(100 * l.q)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func counts(s *Store, id string) [3]int64 {
	it := s.items[id]
	return [3]int64{it.Available, it.Reserved, it.Sold}
}

func TestKeysInRequestOrder(t *testing.T) {
	s := New(world())
	for _, tt := range []struct {
		lines []line
		want  []string
	}{
		{[]line{{"a", 1}}, []string{"item:a"}},
		{[]line{{"b", 1}, {"a", 1}}, []string{"item:b", "item:a"}}, // not sorted
		{[]line{{"a", 1}, {"c", 1}, {"b", 1}}, []string{"item:a", "item:c", "item:b"}},
	} {
		got, err := s.Keys("t1", op(t, "t1", tt.lines...))
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Keys(%v) = %v, %v; want %v", tt.lines, got, err, tt.want)
		}
	}
	if _, err := s.Keys("t1", []byte{9}); err == nil || !strings.HasPrefix(err.Error(), "malformed operation: ") {
		t.Errorf("Keys of a bad op: %v", err)
	}
}

func TestPrepareCommitAbort(t *testing.T) {
	s := New(world())
	// One item, committed.
	if err := s.Prepare("t1", op(t, "t1", line{"a", 3})); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if got := counts(s, "a"); got != [3]int64{7, 3, 0} {
		t.Fatalf("a after prepare: %v", got)
	}
	s.Commit("t1", nil)
	mustCheck(t, s)
	if got := counts(s, "a"); got != [3]int64{7, 0, 3} {
		t.Fatalf("a after commit: %v", got)
	}
	// Two items, aborted: everything goes back.
	before := s.State()
	if err := s.Prepare("t2", op(t, "t2", line{"b", 5}, line{"a", 7})); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if a, b := counts(s, "a"), counts(s, "b"); a != [3]int64{0, 7, 3} || b != [3]int64{0, 5, 0} {
		t.Fatalf("after prepare of two items: a %v, b %v", a, b)
	}
	if got := s.State().Prepared["t2"].Items; !reflect.DeepEqual(got, []ReservedItem{{"b", 5}, {"a", 7}}) {
		t.Fatalf("prepared reservation %+v", got)
	}
	s.Abort("t2", nil)
	mustCheck(t, s)
	if after := s.State(); !reflect.DeepEqual(before, after) {
		t.Fatalf("abort did not restore the state:\n%+v\n%+v", before, after)
	}
	s.Abort("t2", nil) // twice, and unknown: no-ops
	s.Abort("t9", nil)
	// Two items, committed.
	if err := s.Prepare("t3", op(t, "t3", line{"b", 2}, line{"a", 1})); err != nil {
		t.Fatal(err)
	}
	s.Commit("t3", nil)
	mustCheck(t, s)
	if a, b := counts(s, "a"), counts(s, "b"); a != [3]int64{6, 0, 4} || b != [3]int64{3, 0, 2} {
		t.Fatalf("after commit of two items: a %v, b %v", a, b)
	}
}

func TestPrepareAllOrNothing(t *testing.T) {
	for _, tt := range []struct {
		name  string
		lines []line
		err   string
	}{
		{"last item short", []line{{"a", 1}, {"b", 6}}, "insufficient stock for b: 5 available, 6 requested"},
		{"first item short", []line{{"b", 6}, {"a", 1}}, "insufficient stock for b: 5 available, 6 requested"},
		{"out of stock", []line{{"a", 1}, {"b", 1}, {"c", 1}}, "insufficient stock for c: 0 available, 1 requested"},
		{"unknown item", []line{{"a", 10}, {"zz", 1}, {"b", 1}}, "unknown item zz"},
		{"first failing item is named", []line{{"a", 11}, {"zz", 1}}, "insufficient stock for a: 10 available, 11 requested"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(world())
			if err := s.Prepare("t0", op(t, "t0", line{"a", 2})); err != nil { // something held already
				t.Fatal(err)
			}
			s.items["a"].Available, s.items["a"].Stock = 10, 12 // …and still 10 available
			before := s.State()
			err := s.Prepare("t1", op(t, "t1", tt.lines...))
			if err == nil || err.Error() != tt.err {
				t.Fatalf("Prepare = %v, want %q", err, tt.err)
			}
			if after := s.State(); !reflect.DeepEqual(before, after) {
				t.Fatalf("a failed prepare changed the state:\n%+v\n%+v", before, after)
			}
			mustCheck(t, s)
		})
	}
	s := New(world())
	if err := s.Prepare("t1", []byte{2, 0}); err == nil || !strings.HasPrefix(err.Error(), "malformed operation: ") {
		t.Errorf("Prepare of a bad op: %v", err)
	}
}

// TestVersion1Operation checks that an operation logged before multi-item
// orders (binary version 1) still replays.
func TestVersion1Operation(t *testing.T) {
	// Version 1 of t1: user u buys 2 of a at 9.99.
	v1, _ := hex.DecodeString("01" + "027431" + "0175" + "0161" + "02" + "e707" + "31313131" + "0c" + "ed0f")
	s := New(world())
	if keys, err := s.Keys("t1", v1); err != nil || !slices.Equal(keys, []string{"item:a"}) {
		t.Fatalf("Keys = %v, %v", keys, err)
	}
	if err := s.Prepare("t1", v1); err != nil {
		t.Fatal(err)
	}
	s.Commit("t1", v1)
	mustCheck(t, s)
	if got := counts(s, "a"); got != [3]int64{8, 0, 2} {
		t.Fatalf("a: %v", got)
	}
}

func TestStateJSON(t *testing.T) {
	s := New(world())
	if err := s.Prepare("t1", op(t, "t1", line{"a", 1})); err != nil {
		t.Fatal(err)
	}
	s.Commit("t1", nil)
	if err := s.Prepare("t2", op(t, "t2", line{"b", 2}, line{"a", 3})); err != nil {
		t.Fatal(err)
	}
	st := s.State()
	got, _ := json.Marshal(map[string]any{"reservations": st.Reservations, "prepared": st.Prepared})
	want := `{"prepared":{"t2":{"items":[{"item_id":"b","quantity":2},{"item_id":"a","quantity":3}]}},` +
		`"reservations":{"t1":{"items":[{"item_id":"a","quantity":1}]}}}`
	if string(got) != want {
		t.Fatalf("JSON\n got %s\nwant %s", got, want)
	}
	// One item repeats its line in ItemID and Quantity; several do not.
	if r := st.Reservations["t1"]; r.ItemID != "a" || r.Quantity != 1 {
		t.Errorf("one-item reservation %+v", r)
	}
	if r := st.Prepared["t2"]; r.ItemID != "" || r.Quantity != 0 {
		t.Errorf("two-item reservation %+v", r)
	}
	// State is a copy.
	st.Prepared["t2"].Items[0].Quantity = 99
	mustCheck(t, s)
}

func TestCommitUnpreparedPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(world()).Commit("t1", nil)
}

func TestCheckFindsViolations(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(s *Store)
		err    string
	}{
		{"does not add up", func(s *Store) { s.items["a"].Available++ }, "inventory: item a does not add up"},
		{"negative", func(s *Store) { s.items["b"].Available, s.items["b"].Sold = -1, 3 }, "inventory: item b has a negative count"},
		{"reserved but no branch", func(s *Store) { delete(s.prepared, "t2") }, "inventory: item a: reserved 3/sold 1 but branches say 0/1"},
		{"item twice", func(s *Store) {
			r := &s.sold.TailAt(0).res
			r.Items = append(r.Items, r.Items[0])
		}, "inventory: reservation of t1 names item a twice"},
		{"unknown item", func(s *Store) { s.sold.Append(sale{"t9", Reservation{Items: []ReservedItem{{"zz", 1}}}}) }, "inventory: reservation of t9 names unknown item zz"},
		{"no item", func(s *Store) { s.sold.Append(sale{"t9", Reservation{}}) }, "inventory: reservation of t9 has no item"},
		{"committed twice", func(s *Store) { s.sold.Append(*s.sold.TailAt(0)) }, "inventory: t1 committed twice"},
	} {
		s := New(world())
		if err := s.Prepare("t1", op(t, "t1", line{"a", 1})); err != nil {
			t.Fatal(err)
		}
		s.Commit("t1", nil)
		if err := s.Prepare("t2", op(t, "t2", line{"b", 2}, line{"a", 3})); err != nil {
			t.Fatal(err)
		}
		mustCheck(t, s)
		tt.mutate(s)
		if err := s.Check(); err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("%s: Check() = %v, want %q…", tt.name, err, tt.err)
		}
	}
}

// TestRandomAgainstModel runs random prepares, commits and aborts of
// multi-item orders against a model that knows only totals per item, and
// checks the invariants after every step.
func TestRandomAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := purchase.World{Items: map[string]purchase.Item{}}
	ids := []string{"i0", "i1", "i2", "i3", "i4", "nope"}
	for _, id := range ids[:5] {
		w.Items[id] = purchase.Item{Stock: 20}
	}
	s := New(w)
	avail := map[string]int64{"i0": 20, "i1": 20, "i2": 20, "i3": 20, "i4": 20}
	sold := map[string]int64{}
	prepared := map[string][]line{}
	for step := range 5000 {
		tx := fmt.Sprintf("t%d", step)
		switch k := rng.IntN(3); {
		case k == 0 || len(prepared) == 0:
			var lines []line
			for _, i := range rng.Perm(len(ids))[:1+rng.IntN(4)] {
				lines = append(lines, line{ids[i], 1 + rng.Int64N(4)})
			}
			ok := true
			for _, l := range lines {
				if a, known := avail[l.item]; !known || a < l.q {
					ok = false
				}
			}
			err := s.Prepare(tx, op(t, tx, lines...))
			if ok != (err == nil) {
				t.Fatalf("step %d: Prepare(%v) = %v, model says ok=%v", step, lines, err, ok)
			}
			if ok {
				for _, l := range lines {
					avail[l.item] -= l.q
				}
				prepared[tx] = lines
			}
		default:
			txs := slices.Sorted(func(yield func(string) bool) {
				for tx := range prepared {
					if !yield(tx) {
						return
					}
				}
			})
			tx = txs[rng.IntN(len(txs))]
			if k == 1 {
				s.Commit(tx, nil)
				for _, l := range prepared[tx] {
					sold[l.item] += l.q
				}
			} else {
				s.Abort(tx, nil)
				for _, l := range prepared[tx] {
					avail[l.item] += l.q
				}
			}
			delete(prepared, tx)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for id, a := range avail {
			if it := s.items[id]; it.Available != a || it.Sold != sold[id] {
				t.Fatalf("step %d: item %s %+v, model available %d sold %d", step, id, *it, a, sold[id])
			}
		}
	}
}
