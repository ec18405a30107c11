package coordinator

import (
	"context"
	"errors"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// The operator's view: read from the machine on its loop, like Status.

// Transactions returns the oldest limit transactions in flight (0: all),
// the number in flight and the number with a participant in doubt
// (twopc.Coordinator.Transactions).
func (c *Coordinator) Transactions(ctx context.Context, limit int) (txs []twopc.TxInfo, inFlight, inDoubt int, err error) {
	err = c.do(ctx, func() { txs, inFlight, inDoubt = c.m.Transactions(limit) })
	return txs, inFlight, inDoubt, err
}

// WaitGraph returns the merged wait-for graph of global deadlock detection.
func (c *Coordinator) WaitGraph(ctx context.Context) ([]twopc.WaitEdge, error) {
	var out []twopc.WaitEdge
	err := c.do(ctx, func() { out = c.m.WaitGraph() })
	return out, err
}

// Retry resends at once what tx waits for (twopc.Coordinator.Retry) and
// returns the participants sent to. For an aborted transaction it resends
// ABORT to the participants its ABORT record in the log names
// (twopc.Coordinator.ResendAbort).
func (c *Coordinator) Retry(ctx context.Context, tx string) ([]string, error) {
	var (
		sent    []string
		rerr    error
		aborted bool
	)
	err := c.do(ctx, func() {
		if st, ok := c.m.State(tx); ok && st == twopc.CoordAborted {
			aborted = true
			return
		}
		sent, rerr = c.m.Retry(tx)
	})
	if err != nil || !aborted {
		if err != nil {
			return nil, err
		}
		return sent, rerr
	}
	var nodes []string
	if err := c.Records(tx, func(_ uint64, r twopc.Record) {
		if r.Type == twopc.RecAbort {
			nodes = r.Nodes
		}
	}); err != nil {
		return nil, err
	}
	err = c.do(ctx, func() { sent, rerr = c.m.ResendAbort(tx, nodes) })
	if err != nil {
		return nil, err
	}
	return sent, rerr
}

// Records calls fn for every record of the log about tx, in log order,
// with its sequence number. It reads the log while the coordinator runs
// (wal.Log.Replay): records not yet written may be missing.
func (c *Coordinator) Records(tx string, fn func(seq uint64, r twopc.Record)) error {
	if c.log == nil {
		return errors.New("coordinator: records: the log is not this coordinator's own (a replicated coordinator's is its raft log)")
	}
	return c.log.Replay(func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil || rec.Tx != tx {
			return nil
		}
		fn(r.Seq, rec)
		return nil
	})
}

func (c *Coordinator) do(ctx context.Context, f func()) error {
	err := c.node.Do(ctx, c.done, f)
	if err == node.ErrStopped {
		err = ErrClosed
	}
	return err
}
