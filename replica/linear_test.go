package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/twopc"
)

// An outcome register per transaction id, the clients' view of the
// replicated coordinator: a Submit that returns, or an outcome query that
// answers "decided", observes the id's one outcome; a query answering
// "unknown" or "pending" observes that no outcome exists yet.
const (
	outNone      = 0 // no decision (state), or unknown/pending (query output)
	outCommitted = 1
	outAborted   = 2
)

type linInput struct {
	tx     string
	lookup bool
}

var outcomeModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			tx := op.Input.(linInput).tx
			if _, ok := by[tx]; !ok {
				keys = append(keys, tx)
			}
			by[tx] = append(by[tx], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return outNone },
	Step: func(state, input, output any) (bool, any) {
		st, o := state.(int), output.(int)
		switch {
		case o == outNone: // only a query says "not decided"
			return st == outNone, st
		case st == outNone || st == o:
			return true, o
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in := input.(linInput)
		verb := "submit"
		if in.lookup {
			verb = "outcome"
		}
		return fmt.Sprintf("%s(%s) -> %d", verb, in.tx, output.(int))
	},
}

// TestGroupLinearizable records every Submit that returned and every
// outcome query (answered by the leader after ReadIndex) of clients
// running against three replicas while the leader is killed twice, and
// checks the history with porcupine: each id has one outcome, and once an
// outcome was observed no later query says "not decided" (no stale view
// from a deposed leader).
func TestGroupLinearizable(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (DTX_SEED to repeat)", seed)
	p := testProtocol()
	p.DedupWindow = time.Hour // every outcome stays known while the test runs
	g := newGroupProto(t, seed, 3, p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var hist []porcupine.Operation
	record := func(client int, in linInput, call time.Time, out int) {
		mu.Lock()
		hist = append(hist, porcupine.Operation{ClientId: client, Input: in, Call: call.UnixNano(), Output: out, Return: time.Now().UnixNano()})
		mu.Unlock()
	}
	lookup := func(client int, tx string) {
		for _, r := range g.replicas() {
			call := time.Now()
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			k, o, err := r.Lookup(qctx, tx)
			qcancel()
			if err != nil {
				continue
			}
			out := outNone
			if k == coordinator.KnownDecided {
				out = outAborted
				if o.Committed {
					out = outCommitted
				}
			}
			record(client, linInput{tx: tx, lookup: true}, call, out)
			return
		}
	}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ids sync.Map
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for i := 0; lctx.Err() == nil; i++ {
				tx := fmt.Sprintf("l%d-%d", c, i)
				ids.Store(i*6+c, tx)
				bs := g.branches(tx, rng)
				// A query before, maybe during, and after the submission.
				lookup(c, tx)
				for lctx.Err() == nil {
					call := time.Now()
					sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
					o, err := func() (twopc.Outcome, error) {
						for _, r := range g.replicas() {
							o, err := r.Submit(sctx, tx, bs)
							if err == nil {
								return o, nil
							}
						}
						return twopc.Outcome{}, fmt.Errorf("no replica answered")
					}()
					scancel()
					if err == nil {
						out := outAborted
						if o.Committed {
							out = outCommitted
						}
						record(c, linInput{tx: tx}, call, out)
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				lookup(c, tx)
				if v, ok := ids.Load(rng.IntN(i*6 + c + 1)); ok {
					lookup(c, v.(string)) // someone else's, maybe still running
				}
			}
		}()
	}
	for k := 0; k < 2; k++ {
		time.Sleep(400 * time.Millisecond)
		id, _ := g.leader(ctx)
		g.kill(id)
		g.leader(ctx)
		g.start(id)
	}
	time.Sleep(400 * time.Millisecond)
	stop()
	wg.Wait()
	res, info := porcupine.CheckOperationsVerbose(outcomeModel, hist, 20*time.Second)
	if res != porcupine.Ok {
		_ = info
		t.Fatalf("seed %d: history of %d operations is not linearizable (%v)", seed, len(hist), res)
	}
	t.Logf("seed %d: %d operations, linearizable", seed, len(hist))
}

// The model refuses what it must: two outcomes for one id, and a query
// saying "not decided" that starts after an outcome was observed.
func TestOutcomeModel(t *testing.T) {
	op := func(lookup bool, call, ret int64, out int) porcupine.Operation {
		return porcupine.Operation{Input: linInput{tx: "t", lookup: lookup}, Call: call, Return: ret, Output: out}
	}
	for name, tc := range map[string]struct {
		h  []porcupine.Operation
		ok bool
	}{
		"two outcomes":           {[]porcupine.Operation{op(false, 0, 1, outCommitted), op(false, 2, 3, outAborted)}, false},
		"stale query":            {[]porcupine.Operation{op(false, 0, 1, outCommitted), op(true, 2, 3, outNone)}, false},
		"query before decision":  {[]porcupine.Operation{op(true, 0, 1, outNone), op(false, 2, 3, outCommitted), op(true, 4, 5, outCommitted)}, true},
		"concurrent query":       {[]porcupine.Operation{op(false, 0, 5, outCommitted), op(true, 1, 2, outNone)}, true},
		"duplicate same outcome": {[]porcupine.Operation{op(false, 0, 1, outAborted), op(false, 2, 3, outAborted)}, true},
	} {
		if got := porcupine.CheckOperations(outcomeModel, tc.h); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", name, got, tc.ok)
		}
	}
}
