package sim

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability checker: every transaction id is a register written
// once, its outcome. Each answered submission is an operation from the
// tick it was submitted to the tick its answer came (a submission never
// answered may or may not have run; it is left out, which a write-once
// register allows), and once the run is quiet the final state of the
// services is one more read of every id. porcupine checks that some order
// of these operations, consistent with real time, gives every id one
// outcome: the first answer, every later one and the final state agree.
// With a replicated coordinator the answers come from whichever replica
// led at the time, so this is the check across leader changes.

const (
	linCommitted = 1
	linAborted   = 2
)

var linModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			tx := op.Input.(string)
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
	Init: func() any { return 0 },
	Step: func(state, _, output any) (bool, any) {
		st, o := state.(int), output.(int)
		if st == 0 || st == o {
			return true, o
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		o := "COMMITTED"
		if output.(int) == linAborted {
			o = "ROLLED_BACK"
		}
		return fmt.Sprintf("%s -> %s", input.(string), o)
	},
}

func linOutput(committed bool) int {
	if committed {
		return linCommitted
	}
	return linAborted
}

// linAnswer records an answered submission of cl.
func (s *Sim) linAnswer(cl *client, committed bool) {
	s.history = append(s.history, porcupine.Operation{ClientId: cl.idx, Input: cl.req.TxID,
		Call: int64(2 * cl.callAt), Output: linOutput(committed), Return: int64(2*s.now + 1)})
}

// checkLinear adds the final state of every id (committed at every
// service, or at none: atomicity is checked apart) and checks the history.
func (s *Sim) checkLinear(final map[string]bool) {
	end := int64(2*s.now + 2)
	for _, cl := range s.clients {
		committed, ok := final[cl.req.TxID]
		if !ok {
			continue
		}
		s.history = append(s.history, porcupine.Operation{ClientId: len(s.clients) + cl.idx, Input: cl.req.TxID,
			Call: end, Output: linOutput(committed), Return: end + 1})
	}
	res, _ := porcupine.CheckOperationsVerbose(linModel, s.history, 10*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		s.violate("linearizability", "the history of %d answers and final reads has no linearization: some id has two outcomes", len(s.history))
	default:
		s.violate("linearizability", "porcupine could not decide within 10s (%d operations)", len(s.history))
	}
}
