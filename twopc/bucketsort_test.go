package twopc

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestBucketSort: bucketSort sorts like slices.Sort, leaves its input as it
// was, and its directory says where each bucket begins, with one pass or
// two (more buckets than 2^bucketTopBits), for uniform values and for
// skewed ones (all in a few buckets).
func TestBucketSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 100, 2047, 2048, 2049, 5000, 300_000} {
		for _, skew := range []bool{false, true} {
			hs := make([]uint64, n)
			for i := range hs {
				hs[i] = rng.Uint64()
				if skew {
					hs[i] = hs[i]>>60<<60 | hs[i]&7 // 16 top values, few distinct
				}
			}
			in := slices.Clone(hs)
			sorted, dir, shift := bucketSort(hs)
			want := slices.Sorted(slices.Values(in))
			if !slices.Equal(sorted, want) {
				t.Fatalf("n %d skew %v: not sorted", n, skew)
			}
			if !slices.Equal(hs, in) {
				t.Fatalf("n %d skew %v: the input changed", n, skew)
			}
			// Sorted already (an expired set read back): the same values
			// and directory, the input itself returned.
			again, dir2, shift2 := bucketSort(want)
			if !slices.Equal(again, want) || !slices.Equal(dir2, dir) || shift2 != shift || n > 0 && &again[0] != &want[0] {
				t.Fatalf("n %d skew %v: a sorted input comes back otherwise", n, skew)
			}
			if int(dir[len(dir)-1]) != n {
				t.Fatalf("n %d: directory ends at %d", n, dir[len(dir)-1])
			}
			for b := range len(dir) - 1 {
				for i := dir[b]; i < dir[b+1]; i++ {
					if sorted[i]>>shift != uint64(b) {
						t.Fatalf("n %d skew %v: value %x in bucket %d", n, skew, sorted[i], b)
					}
				}
			}
		}
	}
}

// BenchmarkBucketSort sorts 2 million slots, as a service's snapshot of
// its finished branches loads.
func BenchmarkBucketSort(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	hs := make([]uint64, 2_000_000)
	for i := range hs {
		hs[i] = rng.Uint64()
	}
	for b.Loop() {
		bucketSort(hs)
	}
}
