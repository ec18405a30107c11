package twopc

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTagFilter: a filter built from tables answers "may have" for every
// id any of them holds (packed or not, live or replaced), and lets through
// only a few of the ids none holds (the rate its size is for); an empty
// one lets none through.
func TestTagFilter(t *testing.T) {
	seed := uint64(rand.Uint32())
	rng := rand.New(rand.NewPCG(seed, 3))
	if f := newTagFilter(nil); f.mayHave(12345) {
		t.Fatalf("seed %d: an empty filter let a tag through", seed)
	}
	shared := newTxTable()
	var tables []*txTable
	var ids []string
	for g := range 5 {
		tb := newTxTableSeed(shared.seed)
		n := []int{0, 1, 100, 5000, 40000}[g]
		for i := range n {
			id := fmt.Sprintf("g%d-%d-%d", g, i, rng.Uint64())
			tb.Put(id, txVal{state: 1, a: 1}, "")
			if rng.IntN(10) == 0 {
				tb.Put(id, txVal{state: 2, a: 300}, "replaced") // a dead entry and a new one
			}
			ids = append(ids, id)
		}
		if g%2 == 0 {
			tb.pack()
		}
		tables = append(tables, tb)
	}
	f := newTagFilter(tables)
	for _, id := range ids {
		if !f.mayHave(tagOf(txHash(shared.seed, id))) {
			t.Fatalf("seed %d: %s is in a table, the filter says no", seed, id)
		}
	}
	passed := 0
	const absent = 100000
	for i := range absent {
		if f.mayHave(tagOf(txHash(shared.seed, fmt.Sprintf("absent-%d-%d", i, seed)))) {
			passed++
		}
	}
	if rate := float64(passed) / absent; rate > 0.03 {
		t.Fatalf("seed %d: %.2f%% of absent ids pass, want about 1%%", seed, 100*rate)
	}
}

// BenchmarkParticipantNewBranchCheck measures what a new branch's id
// costs a participant's finished tables (branchOf: the current generation,
// then the older ones through their filter), with every generation full:
// 8 of 100,000 branches each.
func BenchmarkParticipantNewBranchCheck(b *testing.B) {
	cfg := testPartConfig("a")
	cfg.Retention = 1 << 40
	p, err := NewParticipant(cfg, multiKV{newKV()})
	if err != nil {
		b.Fatal(err)
	}
	for g := range Generations {
		for i := range 100_000 {
			p.settle(fmt.Sprintf("order-%02d-%018d", g, i), &branch{state: BranchCommitted, attempt: 1})
		}
		if g < Generations-1 {
			p.rotate()
		}
	}
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("fresh-%02d-%018d", i%100, i)
	}
	i := 0
	for b.Loop() {
		if p.branchOf(ids[i&(len(ids)-1)]) != nil {
			b.Fatal("found")
		}
		i++
	}
}

// BenchmarkTagFilterBuild measures a participant rotation's rebuild of the
// filter: seven packed generations of 150,000 ids.
func BenchmarkTagFilterBuild(b *testing.B) {
	shared := newTxTable()
	var tables []*txTable
	for g := range Generations - 1 {
		tb := newTxTableSeed(shared.seed)
		for i := range 150_000 {
			tb.Put(fmt.Sprintf("order-%02d-%018d", g, i), txVal{state: 1, a: 1}, "")
		}
		tb.pack()
		tables = append(tables, tb)
	}
	for b.Loop() {
		newTagFilter(tables)
	}
}
