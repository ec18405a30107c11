package twopc

import "container/heap"

// timerKind says what a timer is for.
type timerKind uint8

const (
	timerPrepare timerKind = 1 + iota // coordinator: prepare-phase deadline
	timerRetry                        // coordinator: resend COMMIT to those who did not ACK
	timerLock                         // participant: lock-wait deadline
	timerInquire                      // participant: ask about an in-doubt branch
)

// timer is one entry of a timer queue. Timers are never removed early:
// when one fires, its owner checks that it still applies (gen matches).
type timer struct {
	at   uint64
	seq  uint64 // insertion order: ties fire in the order they were set
	tx   string
	kind timerKind
	gen  uint32
}

// timers is a min-heap of timers ordered by (at, seq).
type timers struct {
	h   timerHeap
	seq uint64
}

func (t *timers) add(at uint64, tx string, kind timerKind, gen uint32) {
	t.seq++
	heap.Push(&t.h, timer{at: at, seq: t.seq, tx: tx, kind: kind, gen: gen})
}

// pop returns the next timer due at or before now.
func (t *timers) pop(now uint64) (timer, bool) {
	if len(t.h) == 0 || t.h[0].at > now {
		return timer{}, false
	}
	return heap.Pop(&t.h).(timer), true
}

func (t *timers) len() int { return len(t.h) }

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = timer{}
	*h = old[:n-1]
	return x
}

// backoff returns the retry delay for attempt n (0-based): base doubled per
// attempt, capped at max, plus jitter in [0, delay/2] from rnd.
func backoff(base, max uint64, attempt int, rnd func() uint64) uint64 {
	if base == 0 {
		base = 1
	}
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if half := d / 2; half > 0 && rnd != nil {
		d += rnd() % (half + 1)
	}
	return d
}
