package twopc

import (
	"fmt"
	"slices"
	"strings"
)

// What an operator may see of, and ask of, a running coordinator. Every
// method here is for the driver's goroutine, like the rest of the machine.

// TxInfo describes a transaction the coordinator has not finished.
type TxInfo struct {
	Tx      string
	State   CoordState // CoordCollecting or CoordCommitting
	Attempt uint32
	// Ticks is how long the current attempt has run (since the restart,
	// for a transaction brought back from the log).
	Ticks uint64
	// Resends counts the COMMIT resends so far (committing).
	Resends int
	// Nodes are the participants with what each has done: voted (a Vote)
	// while collecting, acknowledged while committing.
	Nodes []TxNode
	// Waiting are the participants the transaction waits for: their vote
	// (collecting) or their ACK (committing).
	Waiting []string
	// InDoubt are the participants that voted YES and do not know the
	// outcome yet: every YES voter while collecting, every one without an
	// ACK while committing.
	InDoubt []string
}

// TxNode is one participant of a transaction in flight.
type TxNode struct {
	Node  string
	Vote  Vote // 0: not yet
	Acked bool
}

// Transactions returns the transactions in flight, oldest attempt first
// (then by id), at most limit of them (0: all), with the number in flight
// and the number with a participant in doubt. Only the ones returned are
// described, so that a console asking every second for the oldest few
// costs the loop little more than a scan of the ids.
func (c *Coordinator) Transactions(limit int) (txs []TxInfo, inFlight, inDoubt int) {
	type aged struct {
		ticks uint64
		t     *coordTx
	}
	older := func(a, b aged) int { // sorts the oldest first
		if a.ticks != b.ticks {
			if a.ticks > b.ticks {
				return -1
			}
			return 1
		}
		return strings.Compare(a.t.id, b.t.id)
	}
	if limit <= 0 || limit > len(c.active) {
		limit = len(c.active)
	}
	// The oldest limit, kept in a heap whose root is the youngest of
	// them: most transactions are compared with the root once and left.
	h := make([]aged, 0, limit)
	down := func(i int) {
		for {
			l, m := 2*i+1, i
			if l < len(h) && older(h[l], h[m]) > 0 {
				m = l
			}
			if l+1 < len(h) && older(h[l+1], h[m]) > 0 {
				m = l + 1
			}
			if m == i {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for _, t := range c.active {
		if t.state == CoordCommitting && slices.Contains(t.acked, false) || t.state == CoordCollecting && slices.Contains(t.votes, VoteYes) {
			inDoubt++
		}
		x := aged{c.now - min(t.started, c.now), t}
		switch {
		case len(h) < limit:
			h = append(h, x)
			for i := len(h) - 1; i > 0 && older(h[(i-1)/2], h[i]) < 0; i = (i - 1) / 2 {
				h[i], h[(i-1)/2] = h[(i-1)/2], h[i]
			}
		case limit > 0 && older(x, h[0]) < 0:
			h[0] = x
			down(0)
		}
	}
	all := h
	slices.SortFunc(all, older)
	out := make([]TxInfo, 0, len(all))
	for _, x := range all {
		t := x.t
		info := TxInfo{Tx: t.id, State: t.state, Attempt: t.attempt, Ticks: x.ticks, Resends: t.attempts}
		for i, n := range t.nodes {
			info.Nodes = append(info.Nodes, TxNode{Node: n, Vote: t.votes[i], Acked: t.acked[i]})
			switch t.state {
			case CoordCollecting:
				if t.votes[i] == 0 {
					info.Waiting = append(info.Waiting, n)
				} else if t.votes[i] == VoteYes {
					info.InDoubt = append(info.InDoubt, n)
				}
			case CoordCommitting:
				if !t.acked[i] {
					info.Waiting = append(info.Waiting, n)
					info.InDoubt = append(info.InDoubt, n)
				}
			}
		}
		out = append(out, info)
	}
	return out, len(c.active), inDoubt
}

// WaitEdge is one edge of the coordinator's merged wait-for graph: Waiter
// waits at Node for a lock Holder holds (or is queued ahead of it).
type WaitEdge struct {
	Waiter, Holder, Node string
	// Ticks is how long the wait has lasted (as reported, plus the
	// report's age).
	Ticks uint64
}

// WaitGraph returns the wait-for graph global deadlock detection works on:
// the edges of every participant's fresh report (WaitsTTL) between
// transactions still collecting votes, sorted. Cycles are broken as they
// are found, so a cycle seen here is one in the middle of being broken.
func (c *Coordinator) WaitGraph() []WaitEdge {
	var out []WaitEdge
	for node, r := range c.waits {
		if c.now-r.at > c.cfg.WaitsTTL {
			continue
		}
		for _, w := range r.waits {
			if w.Waiter == w.Holder || !c.collecting(w.Waiter) || !c.collecting(w.Holder) {
				continue
			}
			out = append(out, WaitEdge{Waiter: w.Waiter, Holder: w.Holder, Node: node, Ticks: w.Age + c.now - r.at})
		}
	}
	slices.SortFunc(out, func(a, b WaitEdge) int {
		return strings.Compare(a.Node+"\x00"+a.Waiter+"\x00"+a.Holder, b.Node+"\x00"+b.Waiter+"\x00"+b.Holder)
	})
	return out
}

// Retry resends at once what transaction tx waits for, instead of waiting
// for its timers: PREPARE to the participants that have not voted (while
// collecting; during a restart's pause they leave early, and again when
// the pause ends: a PREPARE is idempotent), COMMIT to those that have not
// acknowledged (committing; the resend backoff starts over). It returns
// the participants sent to. An ABORT is never owed: a finished transaction
// has nothing to resend (its participants' inquiries are answered).
func (c *Coordinator) Retry(tx string) ([]string, error) {
	if !c.started {
		return nil, ErrNotStarted
	}
	t := c.active[tx]
	if t == nil {
		if st, ok := c.State(tx); ok {
			return nil, fmt.Errorf("twopc: %q is %s: nothing to resend", tx, st)
		}
		return nil, fmt.Errorf("twopc: %q is not in flight", tx)
	}
	var sent []string
	switch t.state {
	case CoordCollecting:
		if t.ops == nil {
			// Brought back from the log, where PREPAREs are not kept: it
			// is being aborted (presumed abort) anyway.
			return nil, fmt.Errorf("twopc: %q: its operations are not known after a restart", tx)
		}
		for i, n := range t.nodes {
			if t.votes[i] == 0 {
				c.rd.Messages = append(c.rd.Messages, Message{
					Type: MsgPrepare, From: c.cfg.ID, To: n, Tx: tx, Epoch: c.epoch, Op: t.ops[i], TS: t.ts, Attempt: t.attempt,
				})
				sent = append(sent, n)
			}
		}
	case CoordCommitting:
		for i, n := range t.nodes {
			if !t.acked[i] {
				sent = append(sent, n)
			}
		}
		c.event(tx, "commit resent by an operator to "+strings.Join(sent, ", "))
		c.sendCommits(t)
		t.attempts = 0
		t.gen++ // the old retry timer no longer applies
		c.armRetry(t)
	}
	return sent, nil
}

// ResendAbort sends ABORT again, now, to nodes for a transaction that was
// aborted: the participants its ABORT record named (the driver reads them
// from the log; the machine forgets them once a transaction is finished).
// An ABORT is not acknowledged, so one that was lost is otherwise only
// made up for by the branch's own inquiries. It returns the nodes sent to.
func (c *Coordinator) ResendAbort(tx string, nodes []string) ([]string, error) {
	if !c.started {
		return nil, ErrNotStarted
	}
	if _, ok := c.active[tx]; ok {
		return nil, fmt.Errorf("twopc: %q is in flight, not aborted", tx)
	}
	f, ok := c.finishedTx(tx)
	if !ok || f.committed {
		if ok {
			return nil, fmt.Errorf("twopc: %q committed: no ABORT to resend", tx)
		}
		return nil, fmt.Errorf("twopc: %q is not known (or past the retention window)", tx)
	}
	var sent []string
	for _, n := range nodes {
		if n == "" || n == c.cfg.ID || slices.Contains(sent, n) {
			continue
		}
		c.send(MsgAbort, n, tx, f.attempt, f.reason)
		sent = append(sent, n)
	}
	if len(sent) > 0 {
		c.event(tx, "abort resent by an operator to "+strings.Join(sent, ", "))
	}
	return sent, nil
}
