// Package lockmgr is the lock table of a dtx participant: exclusive locks on
// string keys for strict two-phase locking, FIFO wait queues, and the
// wait-for graph used to detect deadlocks, within one participant and, with
// the other participants' graphs merged, across them.
//
// # Model
//
// A Table is pure data. It has no goroutines, clocks or mutex, never blocks
// and never times out: the participant's single-threaded state machine calls
// it and owns every timer (lock-wait timeouts, deadlock detection rounds).
//
//   - A key is held by at most one transaction (tx), named by its id. Locks are
//     exclusive; there are no shared locks and no lock upgrades.
//   - Acquire(tx, keys) takes keys in the order given. At the first key held
//     by another tx, tx joins the tail of that key's FIFO queue and stops;
//     it is waiting, and may not call Acquire again until it is granted or
//     released. A tx therefore waits for at most one key in a table.
//   - Release(tx) is the only way locks end (strict 2PL: commit, abort,
//     lock-wait timeout and deadlock victims all release everything at once)
//     and the only way a waiter advances: each key tx held passes to the head
//     of its queue, which resumes taking its remaining keys. Release returns
//     the txs that thereby came to hold all they asked for, in grant order,
//     so the caller can go on with their PREPARE.
//   - A key is in the table only while held; a key with waiters always has a
//     holder. Releasing a waiter never grants anyone.
//
// Given the same calls, a Table always gives the same answers: nothing
// depends on map iteration order or time.
//
// # Wait-for graph and deadlocks
//
// A waiter W queued on key K waits for K's holder (a holder edge) and, since
// queues are FIFO and locks are kept to the end, for every tx queued ahead of
// it on K (ahead edges). Edges returns both kinds; Table.Edges explains why
// ahead edges matter when the graphs of several participants are merged.
// Locally, holder edges alone see every deadlock, and FindCycle follows
// them. A deadlock that spans participants shows only in the merged graph:
// FindCycles, Victim and BreakCycles are pure helpers for the global
// detector, which aborts the youngest tx of each cycle through its
// coordinator; the ABORT then reaches each participant as a Release.
//
// # Cost
//
// Keys and txs live in maps of pooled entries (bounded free lists), and a
// queue is an intrusive doubly linked list, so removing any waiter is O(1).
// An uncontended Acquire and Release allocate nothing once the table is warm;
// ReleaseAppend lets the caller reuse the slice of granted txs.
package lockmgr
