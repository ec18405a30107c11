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
