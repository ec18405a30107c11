package lockmgr

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	seedFlag = flag.Uint64("seed", 0, "seed for TestModel (0: $LOCKMGR_SEED, else the clock)")
	runsFlag = flag.Int("runs", 300, "number of TestModel runs, each from its own seed")
)

// testSeed returns the seed of the randomized tests: -seed, else
// $LOCKMGR_SEED, else the clock. It is logged when a test fails.
func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if seed == 0 {
		if s := os.Getenv("LOCKMGR_SEED"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("LOCKMGR_SEED: %v", err)
			}
			seed = v
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reproduce with: go test ./lockmgr/ -run '^%s$' -seed=%d", t.Name(), seed)
		}
	})
	return seed
}

// refTable is the dumb reference: the same rules, written as plainly as
// possible with strings, slices and linear searches.
type refTable struct {
	holder  map[string]string   // key -> tx
	queue   map[string][]string // key -> waiters, oldest first
	held    map[string][]string // tx -> keys in grant order
	wait    map[string]string   // tx -> key it waits for
	pending map[string][]string // tx -> keys to take after wait
}

func newRef() *refTable {
	return &refTable{
		holder:  map[string]string{},
		queue:   map[string][]string{},
		held:    map[string][]string{},
		wait:    map[string]string{},
		pending: map[string][]string{},
	}
}

func (r *refTable) acquire(tx string, keys []string) (bool, error) {
	if tx == "" {
		return false, ErrEmptyTx
	}
	if slices.Contains(keys, "") {
		return false, ErrEmptyKey
	}
	if _, ok := r.wait[tx]; ok {
		return false, ErrWaiting
	}
	return r.run(tx, keys), nil
}

func (r *refTable) run(tx string, keys []string) bool {
	for i, k := range keys {
		switch r.holder[k] {
		case "":
			r.holder[k] = tx
			r.held[tx] = append(r.held[tx], k)
		case tx:
		default:
			r.queue[k] = append(r.queue[k], tx)
			r.wait[tx] = k
			if rest := keys[i+1:]; len(rest) > 0 {
				r.pending[tx] = slices.Clone(rest)
			}
			return false
		}
	}
	return true
}

func (r *refTable) release(tx string) []string {
	if k, ok := r.wait[tx]; ok {
		r.queue[k] = slices.DeleteFunc(r.queue[k], func(w string) bool { return w == tx })
		delete(r.wait, tx)
		delete(r.pending, tx)
	}
	var granted []string
	for _, k := range r.held[tx] {
		q := r.queue[k]
		if len(q) == 0 {
			delete(r.holder, k)
			continue
		}
		w := q[0]
		r.queue[k] = q[1:]
		r.holder[k] = w
		r.held[w] = append(r.held[w], k)
		delete(r.wait, w)
		rest := r.pending[w]
		delete(r.pending, w)
		if r.run(w, rest) {
			granted = append(granted, w)
		}
	}
	delete(r.held, tx)
	return granted
}

func (r *refTable) edges() []Edge {
	var keys []string
	for k, q := range r.queue {
		if len(q) > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []Edge
	for _, k := range keys {
		q := r.queue[k]
		for i, w := range q {
			out = append(out, Edge{w, r.holder[k], k, false})
			for _, v := range q[:i] {
				out = append(out, Edge{w, v, k, true})
			}
		}
	}
	return out
}

// cycle follows holder edges from tx with a visited set.
func (r *refTable) cycle(tx string) []string {
	path := []string{tx}
	seen := map[string]bool{tx: true}
	cur := tx
	for {
		k, ok := r.wait[cur]
		if !ok {
			return nil
		}
		cur = r.holder[k]
		path = append(path, cur)
		if cur == tx {
			return path
		}
		if seen[cur] {
			return nil
		}
		seen[cur] = true
	}
}

// compare checks every observable of tb against the reference.
func compare(tb *Table, r *refTable, txs, keys []string) error {
	if err := tb.checkInvariants(); err != nil {
		return fmt.Errorf("invariants: %w", err)
	}
	owner := map[string]string{}
	for _, tx := range txs {
		hk := tb.HeldKeys(tx)
		if !slices.Equal(hk, r.held[tx]) {
			return fmt.Errorf("HeldKeys(%s) = %v, reference %v", tx, hk, r.held[tx])
		}
		for _, k := range hk {
			if o, dup := owner[k]; dup {
				return fmt.Errorf("key %s held by both %s and %s", k, o, tx)
			}
			owner[k] = tx
		}
		k, ok := tb.Waiting(tx)
		rk, rok := r.wait[tx]
		if k != rk || ok != rok {
			return fmt.Errorf("Waiting(%s) = %q %v, reference %q %v", tx, k, ok, rk, rok)
		}
		h, ok := tb.WaitsFor(tx)
		if rh := r.holder[rk]; ok != rok || (ok && h != rh) {
			return fmt.Errorf("WaitsFor(%s) = %q %v, reference %q", tx, h, ok, rh)
		}
		if p := tb.Pending(tx); !slices.Equal(p, r.pending[tx]) {
			return fmt.Errorf("Pending(%s) = %v, reference %v", tx, p, r.pending[tx])
		}
		if c, rc := tb.FindCycle(tx), r.cycle(tx); !slices.Equal(c, rc) {
			return fmt.Errorf("FindCycle(%s) = %v, reference %v", tx, c, rc)
		}
	}
	nwait := 0
	for _, k := range keys {
		h, ok := tb.Holder(k)
		if rh := r.holder[k]; h != rh || ok != (rh != "") {
			return fmt.Errorf("Holder(%s) = %q %v, reference %q", k, h, ok, rh)
		}
		if ok && owner[k] != h {
			return fmt.Errorf("Holder(%s) = %s, but HeldKeys says %q", k, h, owner[k])
		}
		if q, rq := tb.Queue(k), r.queue[k]; !slices.Equal(q, rq) && len(q)+len(rq) > 0 {
			return fmt.Errorf("Queue(%s) = %v, reference %v", k, q, rq)
		}
		nwait += len(r.queue[k])
	}
	if h, w := tb.Len(); h != len(r.holder) || w != nwait || w != len(r.wait) {
		return fmt.Errorf("Len() = %d, %d; reference %d, %d", h, w, len(r.holder), nwait)
	}
	edges := tb.Edges()
	if re := r.edges(); !slices.Equal(edges, re) {
		return fmt.Errorf("Edges() = %v,\nreference %v", edges, re)
	}
	anyLocal := false
	for _, tx := range txs {
		anyLocal = anyLocal || r.cycle(tx) != nil
	}
	if cs := FindCycles(edges); (len(cs) > 0) != anyLocal {
		return fmt.Errorf("FindCycles(Edges()) = %v, but local cycles: %v", cs, anyLocal)
	}
	return nil
}

// TestModel drives a Table and the reference with the same random calls and
// compares them, and the invariants, after every step.
func TestModel(t *testing.T) {
	seed := testSeed(t)
	runs, steps := *runsFlag, 400
	if testing.Short() {
		runs = min(runs, 30)
	}
	for run := range runs {
		rng := rand.New(rand.NewPCG(seed, uint64(run)))
		ntx, nkey := 2+rng.IntN(7), 1+rng.IntN(7)
		txs := make([]string, ntx)
		for i := range txs {
			txs[i] = fmt.Sprint("t", i)
		}
		keys := make([]string, nkey)
		for i := range keys {
			keys[i] = fmt.Sprint("k", i)
		}
		tb, r := New(), newRef()
		var trace []string
		for step := range steps {
			var op string
			switch p := rng.IntN(100); {
			case p < 55:
				tx := txs[rng.IntN(ntx)]
				req := make([]string, rng.IntN(5))
				for i := range req {
					req[i] = keys[rng.IntN(nkey)]
				}
				if rng.IntN(50) == 0 {
					req = append(req, "")
				}
				op = fmt.Sprintf("acquire %s %s", tx, strings.Join(req, " "))
				ok, err := tb.Acquire(tx, req)
				rok, rerr := r.acquire(tx, req)
				op += fmt.Sprintf(" -> %v %v", ok, err)
				if ok != rok || !errors.Is(err, rerr) || (err == nil) != (rerr == nil) {
					t.Fatalf("run %d step %d: %s; reference %v %v\ntrace:\n%s", run, step, op, rok, rerr, strings.Join(trace, "\n"))
				}
			case p < 57:
				op = "acquire <empty tx>"
				if _, err := tb.Acquire("", keys[:1]); !errors.Is(err, ErrEmptyTx) {
					t.Fatalf("run %d step %d: Acquire by empty tx: %v", run, step, err)
				}
			default:
				tx := txs[rng.IntN(ntx)]
				got := tb.Release(tx)
				want := r.release(tx)
				op = fmt.Sprintf("release %s -> %v", tx, got)
				if !slices.Equal(got, want) {
					t.Fatalf("run %d step %d: %s; reference %v\ntrace:\n%s", run, step, op, want, strings.Join(trace, "\n"))
				}
			}
			trace = append(trace, op)
			if err := compare(tb, r, txs, keys); err != nil {
				t.Fatalf("run %d step %d: after %s: %v\ntrace:\n%s", run, step, op, err, strings.Join(trace, "\n"))
			}
		}
		// Drain: releasing everyone empties the table.
		for _, tx := range txs {
			tb.Release(tx)
		}
		if h, w := tb.Len(); h != 0 || w != 0 {
			t.Fatalf("run %d: after releasing all, Len() = %d, %d", run, h, w)
		}
	}
}
