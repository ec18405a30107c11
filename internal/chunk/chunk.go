// Package chunk has an append-only list stored in fixed-size chunks: what
// is appended is never copied again, unlike a slice that doubles (and
// copies everything) as it grows. The services keep their ledgers of
// committed transactions in one; they only grow.
package chunk

import (
	"iter"
	"slices"
)

const size = 4096

// List is an append-only list. The zero value is empty and ready.
type List[T any] struct {
	chunks [][]T
	n      int
}

// Append adds v at the end.
func (l *List[T]) Append(v T) {
	if l.n%size == 0 {
		l.chunks = append(l.chunks, make([]T, 0, size))
	}
	c := &l.chunks[len(l.chunks)-1]
	*c = append(*c, v)
	l.n++
}

// Len returns the number of elements.
func (l *List[T]) Len() int { return l.n }

// At returns a pointer to element i (0 <= i < Len).
func (l *List[T]) At(i int) *T { return &l.chunks[i/size][i%size] }

// All yields the elements in order.
func (l *List[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		for _, c := range l.chunks {
			for _, v := range c {
				if !yield(v) {
					return
				}
			}
		}
	}
}

// Frozen returns a view of l as it is now, for reading only (never
// Append to it): later Appends to l do not show in it, and another
// goroutine may read it while l is appended to, because an Append writes
// only beyond the view's elements and never moves a chunk. It costs a copy
// of the chunk headers (one per 4096 elements), not of the elements: how a
// service's snapshot captures its ledger on its loop and serializes it
// off the loop.
func (l *List[T]) Frozen() List[T] { return List[T]{chunks: slices.Clone(l.chunks), n: l.n} }

// Index returns the elements of l by key (key gives an element's key and
// the value to keep), or, if a key comes twice, that key and false.
func Index[T, V any](l *List[T], key func(T) (string, V)) (m map[string]V, dup string, ok bool) {
	m = make(map[string]V, l.n)
	for x := range l.All() {
		k, v := key(x)
		if _, seen := m[k]; seen {
			return nil, k, false
		}
		m[k] = v
	}
	return m, "", true
}
