package lockmgr

import (
	"errors"
	"fmt"
)

// Errors returned by Acquire. They are sentinels: test for them with
// errors.Is, since the returned error may wrap one with context.
var (
	// ErrEmptyTx: the transaction id is the empty string.
	ErrEmptyTx = errors.New("lockmgr: empty transaction id")
	// ErrEmptyKey: one of the requested keys is the empty string.
	ErrEmptyKey = errors.New("lockmgr: empty key")
	// ErrWaiting: the transaction is already queued for a key. It must be
	// granted (see Release) or released before it may ask for more.
	ErrWaiting = errors.New("lockmgr: transaction is already waiting for a lock")
)

// maxFree bounds each free list, so a burst of transactions does not pin its
// peak memory for ever.
const maxFree = 4096

// maxPooledCap is the largest slice capacity a pooled txState keeps; a
// transaction that locked very many keys does not leave a huge buffer behind.
const maxPooledCap = 64

// Table is an exclusive lock table for strict two-phase locking at one
// participant. See the package comment for the model. The zero value is not
// usable; call New. A Table is not safe for concurrent use: its single owner
// (the participant's state machine) serializes every call.
type Table struct {
	keys map[string]*keyState // every locked key; each has a holder
	txs  map[string]*txState  // every tx that holds or waits for a key

	// contended lists the keys whose wait queue is not empty (intrusive,
	// unordered), so that Edges visits only them.
	contended *keyState
	waiting   int // number of txs in some wait queue

	freeKeys []*keyState
	freeTxs  []*txState
}

// keyState is one locked key: its holder and its FIFO queue of waiters. The
// queue is an intrusive doubly linked list through txState.prev/next (a tx
// waits for at most one key), so removing any waiter is O(1).
type keyState struct {
	key    string
	holder *txState // never nil while the key is in Table.keys

	head, tail *txState // wait queue, oldest first
	nwait      int

	cprev, cnext *keyState // Table.contended links, valid while nwait > 0
}

// txState is one transaction known to the table.
type txState struct {
	id   string
	held []*keyState // keys held, in grant order

	// While waiting: wait is the key queued on, and pending[pos:] are the
	// keys still to take once wait is granted (a copy of the caller's slice).
	wait       *keyState
	pending    []string
	pos        int
	prev, next *txState // neighbours in wait.head..wait.tail
}

// New returns an empty lock table.
func New() *Table {
	return &Table{
		keys: make(map[string]*keyState),
		txs:  make(map[string]*txState),
	}
}

// Acquire requests exclusive locks on keys for tx, in the order given.
// Duplicate keys are ignored, and so are keys tx already holds (Acquire is
// re-entrant). Keys are taken one by one; at the first key held by another
// tx, tx joins the tail of that key's FIFO wait queue and stops. It resumes
// with the remaining keys when it is granted that key, during some later
// Release, which reports it once it holds them all.
//
// Acquire returns true if tx now holds every key (true for an empty keys),
// false if it is waiting. It fails, changing nothing, if tx or a key is
// empty (ErrEmptyTx, ErrEmptyKey) or if tx is already waiting (ErrWaiting).
// Acquire does not keep keys; the caller may reuse the slice.
func (t *Table) Acquire(tx string, keys []string) (granted bool, err error) {
	if tx == "" {
		return false, ErrEmptyTx
	}
	for _, k := range keys {
		if k == "" {
			return false, ErrEmptyKey
		}
	}
	ts := t.txs[tx]
	if ts != nil && ts.wait != nil {
		return false, fmt.Errorf("%w: %s waits for key %q", ErrWaiting, tx, ts.wait.key)
	}
	if len(keys) == 0 {
		return true, nil
	}
	if ts == nil {
		ts = t.newTx(tx)
		t.txs[tx] = ts
	}
	i := t.take(ts, keys)
	if i < 0 {
		return true, nil
	}
	ts.pending = append(ts.pending[:0], keys[i+1:]...)
	ts.pos = 0
	return false, nil
}

// take gives keys to tx in order until it meets one held by another tx; it
// queues tx there and returns that key's index, or returns -1 once tx holds
// them all.
func (t *Table) take(tx *txState, keys []string) int {
	for i, k := range keys {
		ks := t.keys[k]
		if ks == nil {
			ks = t.newKey(k)
			t.keys[k] = ks
			ks.holder = tx
			tx.held = append(tx.held, ks)
			continue
		}
		if ks.holder == tx {
			continue
		}
		t.enqueue(ks, tx)
		return i
	}
	return -1
}

// Release drops every lock tx holds and removes tx from any wait queue; it is
// the one exit for commit, abort, lock-wait timeout and deadlock victims
// alike. Each released key passes to the head of its queue, which then goes
// on taking its remaining keys (possibly queueing again). Release returns the
// txs that became fully granted as a consequence, in order of grant; nil if
// none. Releasing an unknown tx does nothing.
func (t *Table) Release(tx string) (granted []string) {
	return t.ReleaseAppend(nil, tx)
}

// ReleaseAppend is Release, appending the granted txs to dst and returning
// the extended slice, so a caller that reuses dst does not allocate.
func (t *Table) ReleaseAppend(dst []string, tx string) []string {
	ts := t.txs[tx]
	if ts == nil {
		return dst
	}
	if ts.wait != nil {
		// Leaving a queue grants nobody: the key still has its holder.
		t.dequeue(ts)
	}
	// Keys pass on one at a time, in grant order. A key not yet passed on is
	// still held by ts, so a resumed waiter that needs it queues behind the
	// waiters already there: FIFO order is kept across keys.
	for i, ks := range ts.held {
		ts.held[i] = nil
		w := ks.head
		if w == nil {
			delete(t.keys, ks.key)
			t.freeKey(ks)
			continue
		}
		t.dequeue(w)
		ks.holder = w
		w.held = append(w.held, ks)
		if j := t.take(w, w.pending[w.pos:]); j >= 0 {
			w.pos += j + 1
			continue
		}
		clear(w.pending)
		w.pending = w.pending[:0]
		w.pos = 0
		dst = append(dst, w.id)
	}
	ts.held = ts.held[:0]
	delete(t.txs, tx)
	t.freeTx(ts)
	return dst
}

// enqueue appends tx to the tail of ks's wait queue.
func (t *Table) enqueue(ks *keyState, tx *txState) {
	assert(tx.wait == nil && ks.holder != tx, "enqueue of a tx that waits or holds the key")
	tx.wait = ks
	tx.prev, tx.next = ks.tail, nil
	if ks.tail != nil {
		ks.tail.next = tx
	} else {
		ks.head = tx
	}
	ks.tail = tx
	if ks.nwait == 0 {
		ks.cprev, ks.cnext = nil, t.contended
		if t.contended != nil {
			t.contended.cprev = ks
		}
		t.contended = ks
	}
	ks.nwait++
	t.waiting++
}

// dequeue removes tx from the queue it waits in, in O(1).
func (t *Table) dequeue(tx *txState) {
	ks := tx.wait
	if tx.prev != nil {
		tx.prev.next = tx.next
	} else {
		ks.head = tx.next
	}
	if tx.next != nil {
		tx.next.prev = tx.prev
	} else {
		ks.tail = tx.prev
	}
	tx.prev, tx.next, tx.wait = nil, nil, nil
	ks.nwait--
	t.waiting--
	if ks.nwait == 0 {
		if ks.cprev != nil {
			ks.cprev.cnext = ks.cnext
		} else {
			t.contended = ks.cnext
		}
		if ks.cnext != nil {
			ks.cnext.cprev = ks.cprev
		}
		ks.cprev, ks.cnext = nil, nil
	}
}

func (t *Table) newKey(key string) *keyState {
	if n := len(t.freeKeys); n > 0 {
		ks := t.freeKeys[n-1]
		t.freeKeys[n-1] = nil
		t.freeKeys = t.freeKeys[:n-1]
		ks.key = key
		return ks
	}
	return &keyState{key: key}
}

func (t *Table) freeKey(ks *keyState) {
	*ks = keyState{}
	if len(t.freeKeys) < maxFree {
		t.freeKeys = append(t.freeKeys, ks)
	}
}

func (t *Table) newTx(id string) *txState {
	if n := len(t.freeTxs); n > 0 {
		ts := t.freeTxs[n-1]
		t.freeTxs[n-1] = nil
		t.freeTxs = t.freeTxs[:n-1]
		ts.id = id
		return ts
	}
	return &txState{id: id}
}

func (t *Table) freeTx(ts *txState) {
	held, pending := ts.held[:0], ts.pending[:0]
	clear(pending[:cap(pending)])
	if cap(held) > maxPooledCap {
		held = nil
	}
	if cap(pending) > maxPooledCap {
		pending = nil
	}
	*ts = txState{held: held, pending: pending}
	if len(t.freeTxs) < maxFree {
		t.freeTxs = append(t.freeTxs, ts)
	}
}

// Holds reports whether tx holds the lock on key.
func (t *Table) Holds(tx, key string) bool {
	ks := t.keys[key]
	return ks != nil && ks.holder.id == tx
}

// Holder returns the tx holding key, if any.
func (t *Table) Holder(key string) (tx string, ok bool) {
	if ks := t.keys[key]; ks != nil {
		return ks.holder.id, true
	}
	return "", false
}

// Waiting returns the key tx is queued on, if it is waiting.
func (t *Table) Waiting(tx string) (key string, ok bool) {
	if ts := t.txs[tx]; ts != nil && ts.wait != nil {
		return ts.wait.key, true
	}
	return "", false
}

// WaitsFor returns the holder of the key tx is queued on, if it is waiting.
// That is tx's one holder edge; see Edges for the full wait-for relation.
func (t *Table) WaitsFor(tx string) (holder string, ok bool) {
	if ts := t.txs[tx]; ts != nil && ts.wait != nil {
		return ts.wait.holder.id, true
	}
	return "", false
}

// Len returns the number of keys held and the number of txs waiting.
func (t *Table) Len() (held, waiting int) {
	return len(t.keys), t.waiting
}

// Pending returns the keys tx still has to take once it is granted the key
// it waits for (in request order, possibly including duplicates or keys it
// already holds, which will be skipped), or nil if it is not waiting. The
// slice is a copy.
func (t *Table) Pending(tx string) []string {
	ts := t.txs[tx]
	if ts == nil || ts.wait == nil || ts.pos == len(ts.pending) {
		return nil
	}
	return append([]string(nil), ts.pending[ts.pos:]...)
}

// HeldKeys returns the keys tx holds, in grant order, or nil. The slice is a
// copy.
func (t *Table) HeldKeys(tx string) []string {
	ts := t.txs[tx]
	if ts == nil || len(ts.held) == 0 {
		return nil
	}
	keys := make([]string, len(ts.held))
	for i, ks := range ts.held {
		keys[i] = ks.key
	}
	return keys
}

// Queue returns the txs waiting for key, oldest first, or nil. The slice is
// a copy.
func (t *Table) Queue(key string) []string {
	ks := t.keys[key]
	if ks == nil || ks.nwait == 0 {
		return nil
	}
	q := make([]string, 0, ks.nwait)
	for w := ks.head; w != nil; w = w.next {
		q = append(q, w.id)
	}
	return q
}
