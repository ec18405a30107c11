package lockmgr

import (
	"encoding/binary"
	"slices"
	"strings"
)

// Edge is one edge of a wait-for graph: Waiter cannot be granted Key before
// Holder has released it.
//
// If Ahead is false, Holder holds Key (a holder edge). If Ahead is true,
// Holder does not hold Key yet but is queued ahead of Waiter on it (an ahead
// edge): with FIFO queues and locks kept until commit or abort, Waiter gets
// Key only after Holder has had it and released it. See Table.Edges.
type Edge struct {
	Waiter string
	Holder string
	Key    string
	Ahead  bool
}

// String renders e as "waiter->holder key" (with "ahead" for ahead edges).
func (e Edge) String() string {
	s := e.Waiter + "->" + e.Holder + " " + e.Key
	if e.Ahead {
		s += " ahead"
	}
	return s
}

// Edges returns the local wait-for graph: for every waiting tx W, queued on
// key K, a holder edge W->H to K's holder and an ahead edge W->V to every tx V
// queued ahead of W on K. Edges are ordered by key, then by W's place in the
// queue, the holder edge first and the ahead edges oldest first.
//
// Why ahead edges. In this table alone they are redundant: every waiter
// queued on K ultimately waits for K's holder, and a waiter waits for one key
// here, so the table has a cycle of ahead and holder edges only if it has
// one of holder edges alone (see FindCycle, which uses those). But a tx may wait at several
// participants at once, and in the merged graph the holder edges alone can
// miss a deadlock for as long as the holder stays: T3 queued behind T2 on K
// here, T2 waiting for T4 at another participant, T4 waiting for T3 at a
// third; with H holding K and waiting for nothing, the holder edges show no
// cycle although T3, T2 and T4 can never finish. With ahead edges the graph
// is the exact wait-for relation and every deadlock is a cycle in it as soon
// as it forms.
//
// The price: a queue of q waiters yields q(q+1)/2 edges. A caller that prefers
// q edges per queue may use AppendEdges(dst, false); every deadlock still
// becomes a cycle of holder edges, only later (once the non-deadlocked
// holders ahead of it have finished).
func (t *Table) Edges() []Edge {
	return t.AppendEdges(nil, true)
}

// AppendEdges appends the local wait-for graph to dst in the order of Edges,
// with ahead edges only if ahead is true.
func (t *Table) AppendEdges(dst []Edge, ahead bool) []Edge {
	if t.contended == nil {
		return dst
	}
	var keys []*keyState
	for ks := t.contended; ks != nil; ks = ks.cnext {
		keys = append(keys, ks)
	}
	slices.SortFunc(keys, func(a, b *keyState) int { return strings.Compare(a.key, b.key) })
	for _, ks := range keys {
		for w := ks.head; w != nil; w = w.next {
			dst = append(dst, Edge{Waiter: w.id, Holder: ks.holder.id, Key: ks.key})
			if !ahead {
				continue
			}
			for v := ks.head; v != w; v = v.next {
				dst = append(dst, Edge{Waiter: w.id, Holder: v.id, Key: ks.key, Ahead: true})
			}
		}
	}
	return dst
}

// FindCycle returns a cycle through tx in the local wait-for graph, as the
// txs along it starting and ending with tx (e.g. [t1 t2 t3 t1]), or nil if tx
// is on none. It follows holder edges only: locally a tx waits for one key,
// so each tx has at most one holder edge and the cycle, if any, is unique.
//
// The table's graph with ahead edges has a cycle if and only if its holder
// edges do, and the holder cycle is made of txs of the other (a run of ahead
// edges inside one queue can always be cut short by the last waiter's edge to
// the holder). What the holder edges leave out are bystanders: with K held
// by H, tx queued on K ahead of Y, and H waiting for Y, the path
// tx->H->Y->tx (ahead) is a cycle, but tx is only stuck behind the deadlock
// of H and Y; aborting tx would break nothing. FindCycle(tx) is nil there,
// FindCycle(H) is [H Y H].
//
// A nil result while tx waits can still hide a deadlock that spans
// participants; only the merged graph (FindCycles) shows those.
func (t *Table) FindCycle(tx string) []string {
	start := t.txs[tx]
	if start == nil || start.wait == nil {
		return nil
	}
	// Out-degree is at most one, so a walk from start either returns to
	// start within len(t.txs) steps, ends at a tx that does not wait, or
	// loops in a cycle that does not contain start.
	n := 0
	for cur := start.wait.holder; ; cur = cur.wait.holder {
		n++
		if cur == start {
			break
		}
		if cur.wait == nil || n > len(t.txs) {
			return nil
		}
	}
	cycle := make([]string, 0, n+1)
	cycle = append(cycle, start.id)
	for cur := start.wait.holder; ; cur = cur.wait.holder {
		cycle = append(cycle, cur.id)
		if cur == start {
			return cycle
		}
	}
}

// FindCycles returns cycles of the wait-for graph made of edges, typically
// the edges of several tables merged by a global detector; keys and the Ahead
// flag are ignored, duplicate edges are harmless. It returns nil if and only
// if the graph is acyclic.
//
// Each cycle is a list of distinct txs closed by its first one, rotated to
// start at its smallest tx id ([t1 t3 t2 t1]). The cycles are those closed by
// the back edges of a depth-first search that visits txs and their
// successors in id order, each shortened along chords to skip txs that are
// not needed to close it (a waiter queued behind another usually has its own
// edge to the holder); duplicates are dropped. They are not every cycle of the
// graph: aborting one tx of each need not make the graph acyclic, so a
// detector repeats until FindCycles returns nil (as BreakCycles does).
// The result depends only on the set of edges, not their order.
func FindCycles(edges []Edge) [][]string {
	if len(edges) == 0 {
		return nil
	}
	// Number the txs in id order and lay the graph out as sorted, deduped
	// adjacency lists in one array (succ[off[v]:end[v]]).
	seenAt := make(map[string]int, len(edges))
	var first []string // in order of first appearance
	pairs := make([][2]int, len(edges))
	num := func(tx string) int {
		i, ok := seenAt[tx]
		if !ok {
			i = len(first)
			seenAt[tx] = i
			first = append(first, tx)
		}
		return i
	}
	for i, e := range edges {
		pairs[i] = [2]int{num(e.Waiter), num(e.Holder)}
	}
	n := len(first)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(first[a], first[b]) })
	rank := make([]int, n)
	names := make([]string, n)
	for r, i := range order {
		rank[i] = r
		names[r] = first[i]
	}
	off := make([]int, n+1)
	for _, p := range pairs {
		off[rank[p[0]]+1]++
	}
	for v := range n {
		off[v+1] += off[v]
	}
	succ := make([]int, len(pairs))
	fill := slices.Clone(off[:n])
	for _, p := range pairs {
		w := rank[p[0]]
		succ[fill[w]] = rank[p[1]]
		fill[w]++
	}
	end := fill // reused: end of each deduped list
	for v := range n {
		s := succ[off[v]:off[v+1]]
		slices.Sort(s)
		end[v] = off[v] + len(slices.Compact(s))
	}
	adj := func(v int) []int { return succ[off[v]:end[v]] }

	const (
		white = iota
		gray
		black
	)
	color := make([]uint8, n)
	type frame struct{ node, next int }
	var stack []frame
	posInCycle := make([]int, n) // scratch for shorten; -1 = not on it
	for i := range posInCycle {
		posInCycle[i] = -1
	}
	var cycles [][]string
	var seen map[string]bool // canonical cycles found, by their node numbers
	var keyBuf []byte
	for root := range n {
		if color[root] != white {
			continue
		}
		color[root] = gray
		stack = append(stack[:0], frame{node: root})
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next == end[top.node]-off[top.node] {
				color[top.node] = black
				stack = stack[:len(stack)-1]
				continue
			}
			v := adj(top.node)[top.next]
			top.next++
			switch color[v] {
			case white:
				color[v] = gray
				stack = append(stack, frame{node: v})
			case gray:
				// Back edge top.node->v closes the stack from v upwards.
				i := len(stack) - 1
				for stack[i].node != v {
					i--
				}
				path := make([]int, 0, len(stack)-i+1)
				for _, f := range stack[i:] {
					path = append(path, f.node)
				}
				path = append(path, v)
				c := rotate(shorten(path, adj, posInCycle))
				keyBuf = keyBuf[:0]
				for _, x := range c {
					keyBuf = binary.AppendUvarint(keyBuf, uint64(x))
				}
				if seen == nil {
					seen = make(map[string]bool)
				}
				if !seen[string(keyBuf)] {
					seen[string(keyBuf)] = true
					out := make([]string, len(c))
					for j, x := range c {
						out[j] = names[x]
					}
					cycles = append(cycles, out)
				}
			}
		}
	}
	return cycles
}

// shorten takes a closed path p[0..k] (p[k] == p[0]) and follows, from each
// node, its edge to the farthest later node of p, dropping the nodes jumped
// over. pos is scratch of -1s, restored on return. Cost O(sum of degrees).
func shorten(p []int, adj func(int) []int, pos []int) []int {
	k := len(p) - 1
	for i := 0; i < k; i++ {
		pos[p[i]] = i
	}
	out := []int{p[0]}
	for i := 0; i < k; {
		far := i + 1
		for _, v := range adj(p[i]) {
			j := pos[v]
			if v == p[0] {
				j = k // closing the cycle is the farthest jump
			}
			if j > far {
				far = j
			}
		}
		out = append(out, p[far])
		i = far
	}
	for i := 0; i < k; i++ {
		pos[p[i]] = -1
	}
	return out
}

// rotate rotates a closed cycle of node numbers, in place, to start at its
// smallest number (smallest id, as numbers follow id order) and closes it
// again.
func rotate(c []int) []int {
	k := len(c) - 1
	m := 0
	for i := 1; i < k; i++ {
		if c[i] < c[m] {
			m = i
		}
	}
	body := c[:k]
	slices.Reverse(body[:m])
	slices.Reverse(body[m:])
	slices.Reverse(body)
	c[k] = c[0]
	return c
}

// Victim picks the tx to abort to break cycle: the youngest, i.e. the one
// with the largest age (a start timestamp or sequence number), and among
// equal ages the largest tx id. A repeated closing tx in cycle is fine. A nil
// age counts every tx as equally old. Victim returns "" for an empty cycle.
//
// The caller must leave out txs whose COMMIT is logged; none can be on a
// cycle, as they wait for no lock (a transaction decides only once every
// branch holds its locks).
func Victim(cycle []string, age func(tx string) uint64) string {
	best := ""
	var bestAge uint64
	for i, tx := range cycle {
		var a uint64
		if age != nil {
			a = age(tx)
		}
		if i == 0 || a > bestAge || (a == bestAge && tx > best) {
			best, bestAge = tx, a
		}
	}
	return best
}

// BreakCycles returns victims whose abort makes the wait-for graph of edges
// acyclic, in the order chosen: it takes the cycles of FindCycles, picks the
// Victim of each that no earlier pick of the round already broke, drops the
// victims' edges and repeats until no cycle is left. Deterministic; nil if
// the graph is acyclic.
func BreakCycles(edges []Edge, age func(tx string) uint64) []string {
	var victims []string
	gone := make(map[string]bool)
	for {
		cycles := FindCycles(edges)
		if len(cycles) == 0 {
			return victims
		}
		for _, c := range cycles {
			if slices.ContainsFunc(c, func(tx string) bool { return gone[tx] }) {
				continue
			}
			v := Victim(c, age)
			gone[v] = true
			victims = append(victims, v)
		}
		edges = slices.DeleteFunc(slices.Clone(edges), func(e Edge) bool {
			return gone[e.Waiter] || gone[e.Holder]
		})
	}
}
