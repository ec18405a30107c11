package twopc

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestTxTableMatchesMap drives the table and a Go map with the same random
// puts (new keys, replacements with and without text, empty keys) and
// checks every key after each step batch and through All.
func TestTxTableMatchesMap(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 2))
	type val struct {
		v    txVal
		text string
	}
	want := map[string]val{}
	tab := newTxTable()
	for step := 0; step < 20000; step++ {
		key := strconv.Itoa(rng.IntN(5000))
		if rng.IntN(50) == 0 {
			key = ""
		}
		v := val{v: txVal{state: uint8(rng.IntN(4)), a: rng.Uint32(), b: rng.Uint32()}}
		if rng.IntN(3) == 0 {
			v.text = "reason " + strconv.Itoa(rng.IntN(100))
		}
		tab.Put(key, v.v, v.text)
		want[key] = v
		if step%997 == 0 || step == 19999 {
			if tab.Len() != len(want) {
				t.Fatalf("seed %d step %d: Len %d, want %d", seed, step, tab.Len(), len(want))
			}
			for k, w := range want {
				v, text, ok := tab.Get(k)
				if !ok || v != w.v || text != w.text || !tab.Has(k) {
					t.Fatalf("seed %d step %d: Get(%q) = %+v %q %v, want %+v", seed, step, k, v, text, ok, w)
				}
			}
			for _, k := range []string{"absent", "-1", "5000"} {
				if _, _, ok := tab.Get(k); ok || tab.Has(k) {
					t.Fatalf("seed %d: Get(%q) found a key never put", seed, k)
				}
			}
			seen := 0
			tab.All(func(k string, v txVal, text string) bool {
				seen++
				if w, ok := want[k]; !ok || w.v != v || w.text != text {
					t.Fatalf("seed %d: All gave %q %+v %q, want %+v", seed, k, v, text, w)
				}
				return true
			})
			if seen != len(want) {
				t.Fatalf("seed %d: All gave %d keys, want %d", seed, seen, len(want))
			}
		}
	}
}

func BenchmarkTxTablePut(b *testing.B) {
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = "b12-" + strconv.Itoa(i)
	}
	b.Run("txTable", func(b *testing.B) {
		tab := newTxTable()
		for i := 0; b.Loop(); i++ {
			tab.Put(ids[i&(len(ids)-1)]+strconv.Itoa(i>>16), txVal{state: 1}, "")
		}
	})
	b.Run("map", func(b *testing.B) {
		m := map[string]finished{}
		for i := 0; b.Loop(); i++ {
			m[ids[i&(len(ids)-1)]+strconv.Itoa(i>>16)] = finished{committed: true}
		}
	})
}

// BenchmarkTxTableHas looks up ids in a table of 1M outcomes: absent ones
// (a new transaction's check, the common case) and present ones.
func BenchmarkTxTableHas(b *testing.B) {
	const n = 1 << 20
	tab := newTxTable()
	for i := range n {
		tab.Put("order-"+strconv.Itoa(i), txVal{state: 1, a: 1}, "")
	}
	absent := make([]string, 1<<16)
	present := make([]string, 1<<16)
	for i := range absent {
		absent[i] = "new-" + strconv.Itoa(i)
		present[i] = "order-" + strconv.Itoa(i*(n>>16))
	}
	for _, c := range []struct {
		name string
		ids  []string
		want bool
	}{{"absent", absent, false}, {"present", present, true}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if tab.Has(c.ids[i&(len(c.ids)-1)]) != c.want {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}
