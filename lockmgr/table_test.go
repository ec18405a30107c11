package lockmgr

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// check fails the test if the table's invariants are broken.
func check(t *testing.T, tb *Table) {
	t.Helper()
	if err := tb.checkInvariants(); err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func acquire(t *testing.T, tb *Table, tx string, want bool, keys ...string) {
	t.Helper()
	got, err := tb.Acquire(tx, keys)
	if err != nil {
		t.Fatalf("Acquire(%s, %v): %v", tx, keys, err)
	}
	if got != want {
		t.Fatalf("Acquire(%s, %v) = %v, want %v", tx, keys, got, want)
	}
	check(t, tb)
}

func release(t *testing.T, tb *Table, tx string, want ...string) {
	t.Helper()
	got := tb.Release(tx)
	if !slices.Equal(got, want) {
		t.Fatalf("Release(%s) granted %v, want %v", tx, got, want)
	}
	check(t, tb)
}

func wantHolder(t *testing.T, tb *Table, key, want string) {
	t.Helper()
	got, ok := tb.Holder(key)
	if want == "" {
		if ok {
			t.Fatalf("Holder(%s) = %s, want none", key, got)
		}
		return
	}
	if !ok || got != want {
		t.Fatalf("Holder(%s) = %q, %v; want %s", key, got, ok, want)
	}
	if !tb.Holds(want, key) {
		t.Fatalf("Holds(%s, %s) = false", want, key)
	}
}

func wantWaiting(t *testing.T, tb *Table, tx, key, holder string) {
	t.Helper()
	k, ok := tb.Waiting(tx)
	h, ok2 := tb.WaitsFor(tx)
	if key == "" {
		if ok || ok2 {
			t.Fatalf("%s waits for %q (held by %q), want not waiting", tx, k, h)
		}
		return
	}
	if !ok || k != key || !ok2 || h != holder {
		t.Fatalf("%s waits for %q (%v) held by %q (%v); want %s held by %s", tx, k, ok, h, ok2, key, holder)
	}
}

func wantLen(t *testing.T, tb *Table, held, waiting int) {
	t.Helper()
	if h, w := tb.Len(); h != held || w != waiting {
		t.Fatalf("Len() = %d, %d; want %d, %d", h, w, held, waiting)
	}
}

func TestGrant(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	wantHolder(t, tb, "a", "t1")
	wantWaiting(t, tb, "t1", "", "")
	wantLen(t, tb, 1, 0)
	if tb.Holds("t2", "a") || tb.Holds("t1", "b") {
		t.Fatal("Holds reports a lock that is not there")
	}
	release(t, tb, "t1")
	wantHolder(t, tb, "a", "")
	wantLen(t, tb, 0, 0)
	// Releasing an unknown or already released tx is a no-op.
	release(t, tb, "t1")
	release(t, tb, "nobody")
}

func TestFIFO(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	acquire(t, tb, "t2", false, "a")
	acquire(t, tb, "t3", false, "a")
	acquire(t, tb, "t4", false, "a")
	if q := tb.Queue("a"); !slices.Equal(q, []string{"t2", "t3", "t4"}) {
		t.Fatalf("Queue(a) = %v", q)
	}
	wantWaiting(t, tb, "t3", "a", "t1")
	wantLen(t, tb, 1, 3)
	release(t, tb, "t1", "t2")
	wantHolder(t, tb, "a", "t2")
	wantWaiting(t, tb, "t3", "a", "t2")
	release(t, tb, "t2", "t3")
	release(t, tb, "t3", "t4")
	release(t, tb, "t4")
	wantLen(t, tb, 0, 0)
}

func TestMultiKeyPartialAndResume(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "b")
	acquire(t, tb, "t2", false, "a", "b", "c")
	// t2 took a, queued on b, and has not touched c.
	wantHolder(t, tb, "a", "t2")
	wantHolder(t, tb, "c", "")
	wantWaiting(t, tb, "t2", "b", "t1")
	if p := tb.Pending("t2"); !slices.Equal(p, []string{"c"}) {
		t.Fatalf("Pending(t2) = %v", p)
	}
	// Someone else takes c meanwhile; t2 will queue there on resumption.
	acquire(t, tb, "t3", true, "c")
	release(t, tb, "t1") // t2 gets b, then waits on c: not fully granted
	wantHolder(t, tb, "b", "t2")
	wantWaiting(t, tb, "t2", "c", "t3")
	if p := tb.Pending("t2"); p != nil {
		t.Fatalf("Pending(t2) = %v, want none", p)
	}
	release(t, tb, "t3", "t2")
	if h := tb.HeldKeys("t2"); !slices.Equal(h, []string{"a", "b", "c"}) {
		t.Fatalf("HeldKeys(t2) = %v", h)
	}
	wantWaiting(t, tb, "t2", "", "")
}

// A resumed waiter that needs a key the releasing tx has not passed on yet
// queues behind the waiters already there.
func TestResumeKeepsFIFOAcrossKeys(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a", "b")
	acquire(t, tb, "t2", false, "a", "b")
	acquire(t, tb, "t3", false, "b")
	release(t, tb, "t1", "t3") // t2 gets a, queues on b behind t3; t3 gets b
	wantHolder(t, tb, "a", "t2")
	wantHolder(t, tb, "b", "t3")
	wantWaiting(t, tb, "t2", "b", "t3")
	release(t, tb, "t3", "t2")
}

func TestReleaseOrderOfGrant(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a", "b", "c")
	acquire(t, tb, "t2", false, "c")
	acquire(t, tb, "t3", false, "a")
	acquire(t, tb, "t4", false, "b")
	release(t, tb, "t1", "t3", "t4", "t2") // t1's keys in grant order: a, b, c
}

func TestReleaseWaiter(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	acquire(t, tb, "t2", true, "x")
	acquire(t, tb, "t2", false, "a")
	acquire(t, tb, "t3", false, "a")
	acquire(t, tb, "t4", false, "a")
	// Releasing a waiter in the middle grants nobody, but frees its keys.
	acquire(t, tb, "t5", false, "x")
	release(t, tb, "t3")
	release(t, tb, "t2", "t5")
	if q := tb.Queue("a"); !slices.Equal(q, []string{"t4"}) {
		t.Fatalf("Queue(a) = %v", q)
	}
	// Head and tail of a queue.
	acquire(t, tb, "t6", false, "a")
	acquire(t, tb, "t7", false, "a")
	release(t, tb, "t4")
	release(t, tb, "t7")
	if q := tb.Queue("a"); !slices.Equal(q, []string{"t6"}) {
		t.Fatalf("Queue(a) = %v", q)
	}
	release(t, tb, "t1", "t6")
	wantLen(t, tb, 2, 0) // t5 holds x, t6 holds a
}

func TestReentrant(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a", "b")
	acquire(t, tb, "t1", true, "b", "a")
	acquire(t, tb, "t1", true, "c", "a")
	if h := tb.HeldKeys("t1"); !slices.Equal(h, []string{"a", "b", "c"}) {
		t.Fatalf("HeldKeys(t1) = %v", h)
	}
	acquire(t, tb, "t2", true, "d")
	acquire(t, tb, "t1", false, "a", "d", "e")
	// A waiting tx may not ask again, with or without keys.
	for _, keys := range [][]string{{"e"}, nil} {
		_, err := tb.Acquire("t1", keys)
		if !errors.Is(err, ErrWaiting) {
			t.Fatalf("Acquire by a waiter: err = %v, want ErrWaiting", err)
		}
	}
	check(t, tb)
	release(t, tb, "t2", "t1")
	if h := tb.HeldKeys("t1"); !slices.Equal(h, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("HeldKeys(t1) = %v", h)
	}
}

func TestDuplicateKeys(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a", "a", "b", "a", "b")
	if h := tb.HeldKeys("t1"); !slices.Equal(h, []string{"a", "b"}) {
		t.Fatalf("HeldKeys(t1) = %v", h)
	}
	// Duplicates of the key waited for, and after it.
	acquire(t, tb, "t2", false, "c", "b", "b", "c", "d", "d")
	release(t, tb, "t1", "t2")
	if h := tb.HeldKeys("t2"); !slices.Equal(h, []string{"c", "b", "d"}) {
		t.Fatalf("HeldKeys(t2) = %v", h)
	}
	wantLen(t, tb, 3, 0)
}

func TestEmptyKeys(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true)
	acquire(t, tb, "t1", true, []string{}...)
	wantLen(t, tb, 0, 0)
	if tb.HeldKeys("t1") != nil {
		t.Fatal("an empty acquire left state behind")
	}
	acquire(t, tb, "t1", true, "a")
	acquire(t, tb, "t1", true)
}

func TestBadInput(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	for _, tc := range []struct {
		tx   string
		keys []string
		want error
	}{
		{"", []string{"b"}, ErrEmptyTx},
		{"", nil, ErrEmptyTx},
		{"t2", []string{"b", ""}, ErrEmptyKey},
		{"t1", []string{""}, ErrEmptyKey},
	} {
		ok, err := tb.Acquire(tc.tx, tc.keys)
		if ok || !errors.Is(err, tc.want) {
			t.Errorf("Acquire(%q, %q) = %v, %v; want %v", tc.tx, tc.keys, ok, err, tc.want)
		}
	}
	// Nothing changed, not even the keys before the bad one.
	wantHolder(t, tb, "b", "")
	wantLen(t, tb, 1, 0)
	check(t, tb)
	for _, err := range []error{ErrEmptyTx, ErrEmptyKey, ErrWaiting} {
		if s := err.Error(); !strings.HasPrefix(s, "lockmgr: ") {
			t.Errorf("error %q lacks the package prefix", s)
		}
	}
}

func TestCallerMayReuseKeys(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "b")
	keys := []string{"a", "b", "c"}
	if ok, _ := tb.Acquire("t2", keys); ok {
		t.Fatal("t2 granted")
	}
	keys[2] = "zzz"
	release(t, tb, "t1", "t2")
	wantHolder(t, tb, "c", "t2")
	wantHolder(t, tb, "zzz", "")
}

func TestWaitsForAndEdges(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	acquire(t, tb, "t5", true, "b")
	acquire(t, tb, "t2", false, "a")
	acquire(t, tb, "t3", false, "a")
	acquire(t, tb, "t4", false, "b")
	want := []Edge{
		{"t2", "t1", "a", false},
		{"t3", "t1", "a", false},
		{"t3", "t2", "a", true},
		{"t4", "t5", "b", false},
	}
	if got := tb.Edges(); !slices.Equal(got, want) {
		t.Fatalf("Edges() = %v, want %v", got, want)
	}
	holderOnly := slices.DeleteFunc(slices.Clone(want), func(e Edge) bool { return e.Ahead })
	if got := tb.AppendEdges(nil, false); !slices.Equal(got, holderOnly) {
		t.Fatalf("AppendEdges(nil, false) = %v, want %v", got, holderOnly)
	}
	if c := tb.FindCycle("t3"); c != nil {
		t.Fatalf("FindCycle(t3) = %v", c)
	}
}

func TestFindCycleLocal(t *testing.T) {
	tb := New()
	acquire(t, tb, "t1", true, "a")
	acquire(t, tb, "t2", true, "b")
	acquire(t, tb, "t3", true, "c")
	acquire(t, tb, "t1", false, "b")
	acquire(t, tb, "t2", false, "c")
	if c := tb.FindCycle("t1"); c != nil {
		t.Fatalf("FindCycle(t1) = %v before the cycle closes", c)
	}
	acquire(t, tb, "t3", false, "a")
	for tx, want := range map[string][]string{
		"t1": {"t1", "t2", "t3", "t1"},
		"t2": {"t2", "t3", "t1", "t2"},
		"t3": {"t3", "t1", "t2", "t3"},
	} {
		if c := tb.FindCycle(tx); !slices.Equal(c, want) {
			t.Fatalf("FindCycle(%s) = %v, want %v", tx, c, want)
		}
	}
	// t4 waits into the cycle but is not on it.
	acquire(t, tb, "t4", false, "a")
	if c := tb.FindCycle("t4"); c != nil {
		t.Fatalf("FindCycle(t4) = %v", c)
	}
	if cs := FindCycles(tb.Edges()); !slices.EqualFunc(cs, [][]string{{"t1", "t2", "t3", "t1"}}, slices.Equal) {
		t.Fatalf("FindCycles = %v", cs)
	}
	release(t, tb, "t3", "t2") // the victim: t2 gets c; t1 still waits for b
	for _, tx := range []string{"t1", "t2", "t4"} {
		if c := tb.FindCycle(tx); c != nil {
			t.Fatalf("FindCycle(%s) = %v after release", tx, c)
		}
	}
}

// Pooled entries must not carry state from one tx to the next.
func TestPoolReuse(t *testing.T) {
	tb := New()
	for i := range 100 {
		a, b := fmt.Sprint("t", i), fmt.Sprint("u", i)
		acquire(t, tb, a, true, "k1", "k2")
		acquire(t, tb, b, false, "k3", "k2", "k4")
		release(t, tb, a, b)
		wantHolder(t, tb, "k1", "")
		release(t, tb, b)
		wantLen(t, tb, 0, 0)
	}
	if len(tb.freeKeys) == 0 || len(tb.freeTxs) == 0 {
		t.Fatal("nothing was pooled")
	}
}

// Removing waiters from a long queue is O(1) each: release every other
// waiter of a long queue, then the rest, back to front.
func TestLongQueueRemoval(t *testing.T) {
	tb := New()
	acquire(t, tb, "h", true, "a")
	const n = 20000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint("w", i)
		if ok, err := tb.Acquire(ids[i], []string{"a"}); ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	for i := 0; i < n; i += 2 {
		tb.Release(ids[i])
	}
	for i := n - 1; i >= 0; i -= 2 {
		tb.Release(ids[i])
	}
	check(t, tb)
	wantLen(t, tb, 1, 0)
}

// A tx queued ahead of a deadlocked waiter is on a cycle of the full graph
// (through an ahead edge) but not part of the deadlock: FindCycle leaves it
// out, FindCycles reports the deadlock itself.
func TestFindCycleBystander(t *testing.T) {
	tb := New()
	acquire(t, tb, "h", true, "k")
	acquire(t, tb, "y", true, "l")
	acquire(t, tb, "tx", false, "k")
	acquire(t, tb, "y", false, "k")
	acquire(t, tb, "h", false, "l")
	if c := tb.FindCycle("tx"); c != nil {
		t.Fatalf("FindCycle(tx) = %v, want nil", c)
	}
	if c := tb.FindCycle("h"); !slices.Equal(c, []string{"h", "y", "h"}) {
		t.Fatalf("FindCycle(h) = %v", c)
	}
	if cs := FindCycles(tb.Edges()); !slices.EqualFunc(cs, [][]string{{"h", "y", "h"}}, slices.Equal) {
		t.Fatalf("FindCycles = %v", cs)
	}
}
