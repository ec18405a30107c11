package coordinator

import (
	"context"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
)

// Known is what Lookup found out about a transaction.
type Known uint8

const (
	// KnownUnknown: the coordinator has no record of the transaction. Under
	// presumed abort it will never commit unless it is submitted (again).
	KnownUnknown Known = 1 + iota
	// KnownPending: votes are being collected; no decision exists yet.
	KnownPending
	// KnownDecided: the decision is durable; see the Outcome.
	KnownDecided
	// KnownExpired: the transaction was decided, but its outcome is past
	// the retention window (twopc.ErrOutcomeExpired): whether it committed
	// is no longer known, and a resubmission of the id is refused.
	KnownExpired
)

// Lookup returns what the coordinator durably knows about tx, without
// proposing it. A decision is reported only once its record is durable:
// a decision taken in the loop's current turn, not yet synced, is
// reported after the sync. Outcome.Committed is true for a transaction
// whose COMMIT is logged even if some ACKs are still missing.
func (c *Coordinator) Lookup(ctx context.Context, tx string) (Known, twopc.Outcome, error) {
	var (
		known Known
		out   twopc.Outcome
		wait  chan twopc.Outcome
	)
	err := c.node.Do(ctx, c.done, func() {
		st, ok := c.m.State(tx)
		if !ok {
			known = KnownUnknown
			if c.m.Expired(tx) {
				known = KnownExpired
			}
			return
		}
		if st == twopc.CoordCollecting {
			known = KnownPending
			return
		}
		rd := c.m.Ready()
		for _, o := range rd.Outcomes {
			if o.Tx == tx && !o.Duplicate { // decided in this turn: not durable yet
				wait = make(chan twopc.Outcome, 1)
				c.lookups[tx] = append(c.lookups[tx], wait)
				return
			}
		}
		known = KnownDecided
		out = twopc.Outcome{Tx: tx, Committed: st == twopc.CoordCommitting || st == twopc.CoordCommitted}
		if !out.Committed {
			out.Reason = c.m.AbortReason(tx)
		}
	})
	if err == node.ErrStopped {
		err = ErrClosed
	}
	if err != nil || wait == nil {
		return known, out, err
	}
	select {
	case o := <-wait:
		o.Duplicate, o.Recovered = false, false
		return KnownDecided, o, nil
	case <-ctx.Done():
		return 0, twopc.Outcome{}, ctx.Err()
	case <-c.done:
		return 0, twopc.Outcome{}, ErrClosed
	}
}

// answerLookups hands a durable outcome to the Lookups waiting for it.
func (c *Coordinator) answerLookups(o twopc.Outcome) {
	if len(c.lookups) == 0 || o.Duplicate {
		return
	}
	for _, ch := range c.lookups[o.Tx] {
		ch <- o
	}
	delete(c.lookups, o.Tx)
}
