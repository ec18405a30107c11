package chunk

import "testing"

func TestList(t *testing.T) {
	var l List[int]
	const n = 3*size + 17
	for i := range n {
		l.Append(i)
		if l.Len() != i+1 || *l.At(i) != i {
			t.Fatalf("after %d appends: Len %d, At(%d) = %d", i+1, l.Len(), i, *l.At(i))
		}
	}
	p := l.At(5) // earlier elements never move
	for i := range size {
		l.Append(n + i)
	}
	if p != l.At(5) || *p != 5 {
		t.Fatal("an appended element moved")
	}
	i := 0
	for v := range l.All() {
		if v != i {
			t.Fatalf("All: element %d is %d", i, v)
		}
		i++
	}
	if i != n+size {
		t.Fatalf("All yielded %d elements, want %d", i, n+size)
	}
	for range l.All() {
		break // stopping early must not panic
	}
}

func TestIndex(t *testing.T) {
	type kv struct {
		k string
		v int
	}
	var l List[kv]
	for i := range 3 * size {
		l.Append(kv{string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676)), i})
	}
	m, _, ok := Index(&l, func(x kv) (string, int) { return x.k, x.v })
	if !ok || len(m) != 3*size {
		t.Fatalf("Index: %d keys, ok %v; want %d, true", len(m), ok, 3*size)
	}
	l.Append(kv{"aaa", 7})
	if _, dup, ok := Index(&l, func(x kv) (string, int) { return x.k, x.v }); ok || dup != "aaa" {
		t.Fatalf("Index with a key twice: dup %q ok %v, want aaa false", dup, ok)
	}
}

// TestFrozen: a frozen view keeps its elements and length while the list
// goes on growing, read concurrently (run with -race).
func TestFrozen(t *testing.T) {
	var l List[int]
	const n = size + 100 // the view ends inside a chunk the list keeps filling
	for i := range n {
		l.Append(i)
	}
	f := l.Frozen()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2 * size {
			l.Append(n + i)
		}
	}()
	got := 0
	for v := range f.All() {
		if v != got {
			t.Errorf("frozen element %d is %d", got, v)
		}
		got++
	}
	<-done
	if got != n || f.Len() != n || l.Len() != n+2*size {
		t.Fatalf("frozen view has %d (Len %d), want %d; list Len %d", got, f.Len(), n, l.Len())
	}
}
