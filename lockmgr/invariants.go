package lockmgr

import (
	"errors"
	"fmt"
)

// assert panics if cond is false. It guards states that only a bug in this
// package can produce; no caller input reaches a failing assert.
func assert(cond bool, msg string) {
	if !cond {
		panic("lockmgr: assertion failed: " + msg)
	}
}

// checkInvariants walks the whole table and reports the first broken
// invariant, or nil. It is O(size of the table) and meant for tests:
//
//   - every key in the table has a holder, which is a known tx listing the
//     key exactly once among its held keys, and every held key is in the
//     table with that holder;
//   - a key's wait queue is well linked, has no duplicates, its count is
//     right, each waiter is a known tx that waits for that key and does not
//     hold it; so a key with waiters has a holder;
//   - a key is on the contended list exactly when its queue is not empty;
//   - every known tx holds or waits for something, waits in at most one
//     queue, and has pending keys only while waiting;
//   - the waiting count matches; free-listed entries are blank.
func (t *Table) checkInvariants() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	queued := make(map[*txState]*keyState)
	for k, ks := range t.keys {
		if ks.key != k {
			fail("key %q stored under %q", ks.key, k)
		}
		h := ks.holder
		if h == nil {
			fail("key %q has no holder", k)
			continue
		}
		if t.txs[h.id] != h {
			fail("holder %s of %q is not in the tx table", h.id, k)
		}
		n := 0
		for _, hk := range h.held {
			if hk == ks {
				n++
			}
		}
		if n != 1 {
			fail("holder %s lists key %q %d times", h.id, k, n)
		}
		count := 0
		var prev *txState
		for w := ks.head; w != nil; w = w.next {
			count++
			if count > len(t.txs) {
				fail("queue of %q loops", k)
				break
			}
			if w.prev != prev {
				fail("queue of %q: bad prev link at %s", k, w.id)
			}
			if q, dup := queued[w]; dup {
				fail("tx %s queued on %q and again on %q", w.id, q.key, k)
			}
			queued[w] = ks
			if w.wait != ks {
				fail("tx %s queued on %q but waits for %v", w.id, k, w.wait)
			}
			if w == h {
				fail("tx %s holds and waits for %q", w.id, k)
			}
			if t.txs[w.id] != w {
				fail("waiter %s on %q is not in the tx table", w.id, k)
			}
			prev = w
		}
		if ks.tail != prev {
			fail("queue of %q: bad tail", k)
		}
		if count != ks.nwait {
			fail("queue of %q has %d waiters, counts %d", k, count, ks.nwait)
		}
	}
	contended := 0
	for ks := t.contended; ks != nil; ks = ks.cnext {
		contended++
		if contended > len(t.keys) {
			fail("contended list loops")
			break
		}
		if t.keys[ks.key] != ks || ks.nwait == 0 {
			fail("key %q on contended list: in table %v, %d waiters", ks.key, t.keys[ks.key] == ks, ks.nwait)
		}
		if ks.cnext != nil && ks.cnext.cprev != ks {
			fail("contended list: bad prev link after %q", ks.key)
		}
	}
	withWaiters := 0
	for _, ks := range t.keys {
		if ks.nwait > 0 {
			withWaiters++
		}
	}
	if contended != withWaiters {
		fail("contended list has %d keys, %d have waiters", contended, withWaiters)
	}
	waiting := 0
	for id, ts := range t.txs {
		if ts.id != id {
			fail("tx %s stored under %s", ts.id, id)
		}
		if len(ts.held) == 0 && ts.wait == nil {
			fail("tx %s neither holds nor waits", id)
		}
		for _, ks := range ts.held {
			if ks == nil || t.keys[ks.key] != ks || ks.holder != ts {
				fail("tx %s lists a key it does not hold", id)
			}
		}
		if ts.wait != nil {
			waiting++
			if queued[ts] != ts.wait {
				fail("tx %s waits for %q but is not in its queue", id, ts.wait.key)
			}
		} else if ts.pos != 0 || len(ts.pending) != 0 || ts.prev != nil || ts.next != nil {
			fail("tx %s does not wait but has wait state", id)
		}
	}
	if waiting != t.waiting || waiting != len(queued) {
		fail("%d txs wait, %d queued, count says %d", waiting, len(queued), t.waiting)
	}
	for _, ks := range t.freeKeys {
		if *ks != (keyState{}) {
			fail("free key entry not blank")
		}
	}
	for _, ts := range t.freeTxs {
		if ts.id != "" || ts.wait != nil || len(ts.held) != 0 || len(ts.pending) != 0 || ts.prev != nil || ts.next != nil {
			fail("free tx entry not blank")
		}
		if t.txs[ts.id] == ts {
			fail("free tx entry still in table")
		}
	}
	return errors.Join(errs...)
}
