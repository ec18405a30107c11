package participant

import (
	"testing"

	"github.com/dtx-dev/dtx/twopc"
)

// replayRes records which prepare a wrapper reached.
type replayRes struct{ calls []string }

func (r *replayRes) Keys(string, []byte) ([]string, error) { return nil, nil }
func (r *replayRes) Prepare(tx string, _ []byte) error {
	r.calls = append(r.calls, "Prepare "+tx)
	return nil
}
func (r *replayRes) Commit(string, []byte) {}
func (r *replayRes) Abort(string, []byte)  {}
func (r *replayRes) ReplayPrepare(tx string, _ uint32, _ []byte) error {
	r.calls = append(r.calls, "ReplayPrepare "+tx)
	return nil
}

// TestWrappersForwardReplayPrepare: the service's wrappers around a
// Resource (the fault injector, the tracer) pass a replayed prepare to
// the Resource's own ReplayPrepare, never to its full Prepare, and the
// fault injector does not fail it, even at a failure rate of 1 (its
// faults start after replay). A wrapper that dropped the method would
// make every restart run each replayed prepare's business checks again.
func TestWrappersForwardReplayPrepare(t *testing.T) {
	res := &replayRes{}
	f := &faulty{AttemptResource: twopc.AsAttemptResource(res), on: true, rate: 1, rng: newLockedRand(1)}
	wrapped := map[string]twopc.AttemptResource{
		"faulty":         f,
		"traced":         tracedResource{AttemptResource: twopc.AsAttemptResource(res)},
		"traced(faulty)": tracedResource{AttemptResource: f},
	}
	for name, w := range wrapped {
		res.calls = nil
		if _, ok := w.(twopc.ReplayPreparer); !ok {
			t.Fatalf("%s: not a twopc.ReplayPreparer", name)
		}
		if err := twopc.ReplayPrepare(w, "t1", 2, nil); err != nil {
			t.Fatalf("%s: ReplayPrepare: %v", name, err)
		}
		if len(res.calls) != 1 || res.calls[0] != "ReplayPrepare t1" {
			t.Fatalf("%s: the Resource saw %v, want [ReplayPrepare t1]", name, res.calls)
		}
	}
	// The injector still fails a live prepare at rate 1.
	if err := f.PrepareAttempt("t2", 1, nil); err == nil {
		t.Fatal("faulty at rate 1 let a live prepare through")
	}
}
