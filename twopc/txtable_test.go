package twopc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
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

// TestTxTableModel drives tables and a Go map model through the same
// random operations: puts of new keys and replacements (same text, new
// text, numbers that fit the widths already stored and numbers that do
// not, states needing an extra byte, texts larger than a chunk), gets and
// has of present and absent keys, rotations (the table is packed, then
// takes keys again), freezes, and a tiny chunk budget so that parts are
// sealed. Seeded; the seed is printed on failure (TXTABLE_SEED reruns one).
func TestTxTableModel(t *testing.T) {
	seed := rand.Uint64()
	if s := os.Getenv("TXTABLE_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	runs, steps := 10, 3000
	if testing.Short() {
		runs = 3
	}
	for run := range runs {
		txTableModelRun(t, seed+uint64(run), steps)
	}
}

func txTableModelRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	type val struct {
		v    txVal
		text string
	}
	want := map[string]val{}
	tab := newTxTable()
	if rng.IntN(2) == 0 {
		tab.maxChunks = 1 + rng.IntN(4) // seal parts often
	}
	keys := 50 + rng.IntN(2000)
	num := func() uint32 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return uint32(rng.IntN(128))
		case 2:
			return uint32(rng.IntN(1 << 16))
		}
		return rng.Uint32()
	}
	check := func(step int, k string) {
		t.Helper()
		w, in := want[k]
		v, text, ok := tab.Get(k)
		if ok != in || tab.Has(k) != in || (in && (v != w.v || text != w.text)) {
			t.Fatalf("seed %d step %d: Get(%q) = %+v %.20q %v, want %+v %.20q %v", seed, step, k, v, text, ok, w.v, w.text, in)
		}
	}
	var frozen []txFrozen
	var frozenWant []map[string]val
	for step := range steps {
		k := "k" + strconv.Itoa(rng.IntN(keys))
		switch op := rng.IntN(100); {
		case op < 55:
			v := val{v: txVal{state: uint8(rng.IntN(5)), a: num(), b: num()}}
			if rng.IntN(20) == 0 {
				v.v.state = uint8(rng.IntN(256))
			}
			switch rng.IntN(10) {
			case 0, 1, 2:
				v.text = "reason " + strconv.Itoa(rng.IntN(50))
			case 3:
				if old, ok := want[k]; ok {
					v.text = old.text // a value change under the same text
				}
			case 4:
				if rng.IntN(50) == 0 {
					v.text = strings.Repeat("x", txChunkMax+rng.IntN(3000))
				}
			}
			if rng.IntN(100) == 0 {
				k = strings.Repeat("long", 40) + k
			}
			tab.Put(k, v.v, v.text)
			want[k] = v
			check(step, k)
		case op < 90:
			check(step, k)
			check(step, "absent"+k)
		case op < 93:
			tab.pack() // as at a rotation; later puts reopen it
		case op < 95:
			frozen = append(frozen, tab.freeze())
			frozenWant = append(frozenWant, maps.Clone(want))
		default:
			if tab.Len() != len(want) {
				t.Fatalf("seed %d step %d: Len %d, want %d", seed, step, tab.Len(), len(want))
			}
		}
	}
	for k := range want {
		check(steps, k)
	}
	all := func(name string, f func(func(string, txVal, string) bool), w map[string]val) {
		seen := map[string]bool{}
		f(func(k string, v txVal, text string) bool {
			if seen[k] {
				t.Fatalf("seed %d: %s gave %q twice", seed, name, k)
			}
			seen[k] = true
			if x, ok := w[k]; !ok || x.v != v || x.text != text {
				t.Fatalf("seed %d: %s gave %q %+v, want %+v", seed, name, k, v, x.v)
			}
			return true
		})
		if len(seen) != len(w) {
			t.Fatalf("seed %d: %s gave %d keys, want %d", seed, name, len(seen), len(w))
		}
	}
	all("All", tab.All, want)
	for i := range frozen {
		all("frozen All", frozen[i].All, frozenWant[i])
		// A snapshot's buffer is sized by encodedMax once: it must bound
		// what appendFinished writes.
		if n, max := len(appendFinished(nil, &frozen[i])), frozen[i].encodedMax(); n > max {
			t.Fatalf("seed %d: frozen %d encodes to %d bytes, more than encodedMax %d", seed, i, n, max)
		}
	}
	// The expired set of the table knows every key and (but for a 2^-64
	// chance) nothing else.
	exp := tab.expiredSet()
	for k := range want {
		if !exp.has(k) || exp.has("absent"+k) {
			t.Fatalf("seed %d: expired set wrong about %q", seed, k)
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

// TestTxTableReserve: a table told how many keys come takes them all
// without growing its index again, finds each, and still grows past
// them; reserve on a packed table or of nothing changes nothing.
func TestTxTableReserve(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 3))
	tab := newTxTable()
	tab.Put("before", txVal{state: 1}, "")
	n := 1000 + rng.IntN(50000)
	tab.reserve(n)
	homes := tab.homes
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "tx-" + strconv.FormatUint(rng.Uint64(), 36)
		tab.Put(keys[i], txVal{state: 2, a: uint32(i)}, "")
	}
	if tab.homes != homes {
		t.Fatalf("seed %d: %d keys after reserve(%d): the index grew from %d to %d homes", seed, n, n, homes, tab.homes)
	}
	for i, k := range keys {
		if v, _, ok := tab.Get(k); !ok || v.a != uint32(i) {
			t.Fatalf("seed %d: Get(%q) = %+v %v", seed, k, v, ok)
		}
	}
	if !tab.Has("before") || tab.Has("after") {
		t.Fatalf("seed %d: Has is wrong after reserve", seed)
	}
	for i := range n / 2 {
		tab.Put("more-"+strconv.Itoa(i), txVal{state: 3}, "")
	}
	if tab.homes == homes || !tab.Has("more-0") || !tab.Has(keys[n-1]) || tab.Len() != n+n/2+1 {
		t.Fatalf("seed %d: past the reserve: homes %d (was %d), len %d", seed, tab.homes, homes, tab.Len())
	}
	tab.pack()
	tab.reserve(10)
	tab.reserve(0)
	if tab.homes != 0 || !tab.Has(keys[0]) {
		t.Fatalf("seed %d: reserve changed a packed table", seed)
	}
}

// TestTxTableBulk: a table bulk-loaded (a snapshot's restore) answers every
// key as one built by Put, stays a working table afterwards (puts,
// replacements, packing), reports a key given twice, and past the chunks
// one part can number goes on by Put without losing a key.
func TestTxTableBulk(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 3))
	for run := range 20 {
		n := rng.IntN(5000)
		ref, bulk := newTxTable(), newTxTable()
		if run%3 == 0 {
			bulk.maxChunks = 3 // most of the load goes the direct way
		}
		b := bulk.bulk(n)
		dupAt := -1
		if run%2 == 1 && n > 10 {
			dupAt = 1 + rng.IntN(n-1) // a key given before it: not the first
		}
		var keys []string
		for i := range n {
			k := fmt.Sprintf("tx-%d-%d", run, rng.Uint64()%(1<<40))
			if i == dupAt {
				k = keys[rng.IntN(len(keys))]
			}
			text := ""
			if rng.IntN(4) == 0 {
				text = strings.Repeat("r", rng.IntN(300))
			}
			v := txVal{state: uint8(rng.IntN(2)), a: uint32(rng.IntN(5))}
			if !slices.Contains(keys, k) {
				ref.Put(k, v, text)
			}
			keys = append(keys, k)
			b.add(k, v, text)
		}
		dup, ok := b.finish()
		if dupAt >= 0 {
			if ok || dup != keys[dupAt] {
				t.Fatalf("seed %d run %d: key %q given twice: finish says %q, %v", seed, run, keys[dupAt], dup, ok)
			}
			continue
		}
		if !ok {
			t.Fatalf("seed %d run %d: finish reports %q twice", seed, run, dup)
		}
		check := func(when string) {
			if bulk.Len() != ref.Len() {
				t.Fatalf("seed %d run %d %s: %d keys, want %d", seed, run, when, bulk.Len(), ref.Len())
			}
			ref.All(func(k string, v txVal, text string) bool {
				got, gt, ok := bulk.Get(k)
				if !ok || got != v || gt != text {
					t.Fatalf("seed %d run %d %s: %q is %+v %q %v, want %+v %q", seed, run, when, k, got, gt, ok, v, text)
				}
				return true
			})
			if bulk.Has("absent") {
				t.Fatalf("seed %d run %d %s: an absent key found", seed, run, when)
			}
		}
		check("after the load")
		for i := range 200 {
			k := fmt.Sprintf("new-%d", i)
			if i%2 == 0 && len(keys) > 0 {
				k = keys[rng.IntN(len(keys))]
			}
			v := txVal{state: 1, a: uint32(i)}
			ref.Put(k, v, "")
			bulk.Put(k, v, "")
		}
		check("after more puts")
		bulk.pack()
		check("packed")
	}
}
