package twopc

import (
	"cmp"
	"slices"
)

// timerKind says what a timer is for.
type timerKind uint8

const (
	timerPrepare timerKind = 1 + iota // coordinator: prepare-phase deadline
	timerRetry                        // coordinator: resend COMMIT to those who did not ACK
	timerLock                         // participant: lock-wait deadline
	timerInquire                      // participant: ask about an in-doubt branch
	timerRestart                      // coordinator: send a restarted attempt's PREPAREs
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

// timers is a hashed timing wheel: a timer due at tick t waits in slot
// t mod wheelSlots, and each tick scans only its own slot (timers further
// than one turn away stay put until their turn comes round). Adding is O(1)
// and firing is O(due), where the binary heap it replaced paid O(log n) per
// timer on the hot path (every PREPARE arms one). Timers fire tick by tick,
// in the order they were set within a tick; one set for a tick already
// passed fires at the next pop. Nothing depends on a finer order: a timer's
// owner checks that it still applies when it fires.
type timers struct {
	slots [wheelSlots][]timer
	cur   uint64  // first tick whose slot has not been scanned yet
	due   []timer // fired by the last scan, handed out by pop
	di    int
	n     int
	seq   uint64
}

const wheelSlots = 1024 // a power of two

func (t *timers) add(at uint64, tx string, kind timerKind, gen uint32) {
	t.seq++
	t.n++
	tm := timer{at: at, seq: t.seq, tx: tx, kind: kind, gen: gen}
	if at < t.cur { // its tick was scanned already: due at the next pop
		t.due = append(t.due, tm)
		return
	}
	s := &t.slots[at&(wheelSlots-1)]
	*s = append(*s, tm)
}

// pop returns the next timer due at or before now.
func (t *timers) pop(now uint64) (timer, bool) {
	for {
		if t.di < len(t.due) {
			tm := t.due[t.di]
			t.due[t.di] = timer{}
			t.di++
			t.n--
			return tm, true
		}
		t.due, t.di = t.due[:0], 0
		if t.cur > now {
			return timer{}, false
		}
		if now-t.cur >= wheelSlots { // a jump of a whole turn: scan every slot once
			for i := range t.slots {
				t.scan(i, now)
			}
			slices.SortFunc(t.due, func(a, b timer) int {
				return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.seq, b.seq))
			})
			t.cur = now + 1
			continue
		}
		t.scan(int(t.cur&(wheelSlots-1)), t.cur)
		t.cur++
	}
}

// scan moves the timers of slot i due at or before upTo to t.due.
func (t *timers) scan(i int, upTo uint64) {
	s := t.slots[i]
	keep := s[:0]
	for _, tm := range s {
		if tm.at <= upTo {
			t.due = append(t.due, tm)
		} else {
			keep = append(keep, tm)
		}
	}
	clear(s[len(keep):])
	t.slots[i] = keep
}

func (t *timers) len() int { return t.n }

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
