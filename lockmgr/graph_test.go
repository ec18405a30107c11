package lockmgr

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/quick"
)

// randomEdges turns bytes into edges between n0..n7 (two bytes an edge).
func randomEdges(raw []byte) []Edge {
	var edges []Edge
	for i := 0; i+1 < len(raw); i += 2 {
		w, h := raw[i]%8, raw[i+1]%8
		if w == h {
			continue // no self-waits in a lock table
		}
		edges = append(edges, Edge{Waiter: fmt.Sprint("n", w), Holder: fmt.Sprint("n", h), Key: fmt.Sprint("k", i)})
	}
	return edges
}

// acyclic is the dumb reference: Kahn's algorithm.
func acyclic(edges []Edge) bool {
	indeg := map[string]int{}
	out := map[string][]string{}
	seen := map[[2]string]bool{}
	for _, e := range edges {
		if _, ok := indeg[e.Waiter]; !ok {
			indeg[e.Waiter] = 0
		}
		if seen[[2]string{e.Waiter, e.Holder}] {
			continue
		}
		seen[[2]string{e.Waiter, e.Holder}] = true
		indeg[e.Holder]++
		out[e.Waiter] = append(out[e.Waiter], e.Holder)
	}
	var ready []string
	for n, d := range indeg {
		if d == 0 {
			ready = append(ready, n)
		}
	}
	done := 0
	for len(ready) > 0 {
		n := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		done++
		for _, m := range out[n] {
			if indeg[m]--; indeg[m] == 0 {
				ready = append(ready, m)
			}
		}
	}
	return done == len(indeg)
}

// validCycle checks that c is a closed cycle of distinct nodes along edges,
// starting at its smallest node.
func validCycle(c []string, edges []Edge) error {
	if len(c) < 3 || c[0] != c[len(c)-1] {
		return fmt.Errorf("cycle %v is not closed", c)
	}
	has := map[[2]string]bool{}
	for _, e := range edges {
		has[[2]string{e.Waiter, e.Holder}] = true
	}
	body := c[:len(c)-1]
	if slices.Min(body) != c[0] {
		return fmt.Errorf("cycle %v does not start at its smallest id", c)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(body)))) != len(body) {
		return fmt.Errorf("cycle %v repeats a node", c)
	}
	for i := 0; i+1 < len(c); i++ {
		if !has[[2]string{c[i], c[i+1]}] {
			return fmt.Errorf("cycle %v uses a missing edge %s->%s", c, c[i], c[i+1])
		}
	}
	return nil
}

func TestFindCyclesQuick(t *testing.T) {
	f := func(raw []byte) bool {
		edges := randomEdges(raw)
		cycles := FindCycles(edges)
		if (len(cycles) == 0) != acyclic(edges) {
			t.Logf("edges %v: FindCycles = %v, acyclic = %v", edges, cycles, acyclic(edges))
			return false
		}
		for _, c := range cycles {
			if err := validCycle(c, edges); err != nil {
				t.Logf("edges %v: %v", edges, err)
				return false
			}
		}
		// Deterministic, whatever the order of the edges.
		shuffled := slices.Clone(edges)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := FindCycles(shuffled); !slices.EqualFunc(again, cycles, slices.Equal) {
			t.Logf("edges %v: FindCycles = %v, shuffled %v", edges, cycles, again)
			return false
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
}

func TestBreakCyclesQuick(t *testing.T) {
	age := func(tx string) uint64 { return uint64(tx[len(tx)-1]) % 3 }
	f := func(raw []byte) bool {
		edges := randomEdges(raw)
		victims := BreakCycles(edges, age)
		if (len(victims) == 0) != acyclic(edges) {
			return false
		}
		left := slices.DeleteFunc(slices.Clone(edges), func(e Edge) bool {
			return slices.Contains(victims, e.Waiter) || slices.Contains(victims, e.Holder)
		})
		if !acyclic(left) {
			t.Logf("edges %v: victims %v leave a cycle", edges, victims)
			return false
		}
		// No tx is picked twice.
		return len(slices.Compact(slices.Sorted(slices.Values(victims)))) == len(victims)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
}

func TestVictimQuick(t *testing.T) {
	ref := func(cycle []string, age func(string) uint64) string {
		s := slices.Clone(cycle)
		slices.SortFunc(s, func(a, b string) int {
			if age(a) != age(b) {
				if age(a) > age(b) {
					return -1
				}
				return 1
			}
			if a > b {
				return -1
			}
			if a < b {
				return 1
			}
			return 0
		})
		if len(s) == 0 {
			return ""
		}
		return s[0]
	}
	f := func(ids []uint8, ages []uint8) bool {
		cycle := make([]string, len(ids))
		for i, id := range ids {
			cycle[i] = fmt.Sprint("t", id%16)
		}
		age := func(tx string) uint64 {
			var n int
			fmt.Sscanf(tx, "t%d", &n)
			if len(ages) == 0 {
				return 0
			}
			return uint64(ages[n%len(ages)] % 4)
		}
		return Victim(cycle, age) == ref(cycle, age)
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
	if v := Victim([]string{"t1", "t2", "t1"}, nil); v != "t2" {
		t.Fatalf("Victim with nil age = %s, want t2", v)
	}
	if v := Victim(nil, nil); v != "" {
		t.Fatalf("Victim(nil) = %q", v)
	}
}

func TestFindCyclesExamples(t *testing.T) {
	e := func(w, h string) Edge { return Edge{Waiter: w, Holder: h} }
	for _, tc := range []struct {
		name  string
		edges []Edge
		want  [][]string
	}{
		{"none", nil, nil},
		{"chain", []Edge{e("a", "b"), e("b", "c")}, nil},
		{"two", []Edge{e("b", "a"), e("a", "b")}, [][]string{{"a", "b", "a"}}},
		{"three", []Edge{e("t2", "t3"), e("t3", "t1"), e("t1", "t2")}, [][]string{{"t1", "t2", "t3", "t1"}}},
		// t3 queued behind t2 on one key held by t1 (edges t3->t1 holder,
		// t3->t2 ahead); t1 waits for t3 elsewhere. The cycle through t2 is
		// shortened along the chord t3->t1.
		{"shortcut", []Edge{e("t2", "t1"), e("t3", "t1"), e("t3", "t2"), e("t1", "t3")}, [][]string{{"t1", "t3", "t1"}}},
		// Two disjoint cycles.
		{"two cycles", []Edge{e("a", "b"), e("b", "a"), e("c", "d"), e("d", "c")}, [][]string{{"a", "b", "a"}, {"c", "d", "c"}}},
	} {
		if got := FindCycles(tc.edges); !slices.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("%s: FindCycles = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A long chain closing into a cycle: FindCycles must stay linear-ish (no
// recursion depth, no quadratic shortening).
func TestFindCyclesLongChain(t *testing.T) {
	const n = 100000
	edges := make([]Edge, 0, n)
	for i := range n {
		edges = append(edges, Edge{Waiter: fmt.Sprintf("t%06d", i), Holder: fmt.Sprintf("t%06d", (i+1)%n)})
	}
	cs := FindCycles(edges)
	if len(cs) != 1 || len(cs[0]) != n+1 {
		t.Fatalf("got %d cycles", len(cs))
	}
}
