package sim

import (
	"maps"
	"reflect"
	"slices"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// checkFinal runs the checkers on a run that healed and became quiet.
func (s *Sim) checkFinal() {
	var st services.State
	for _, c := range s.parts() {
		if err := st.Set(c.id, c.res.Resource); err != nil {
			s.violate("config", "%v", err)
			return
		}
	}
	inv, pay, ord := st.Inventory, st.Payment, st.Order
	coord := s.leaderComp().coord

	// Conservation: stock and money add up, nothing is negative.
	for _, c := range s.parts() {
		if err := c.res.check(); err != nil {
			s.violate("conservation", "%v", err)
		}
	}
	if len(inv.Prepared) > 0 || len(pay.Held) > 0 || len(ord.Pending) > 0 {
		s.violate("liveness", "tentative changes left after quiet: reserved %v, held %v, pending %v",
			slices.Sorted(maps.Keys(inv.Prepared)), slices.Sorted(maps.Keys(pay.Held)), slices.Sorted(maps.Keys(ord.Pending)))
	}

	// Atomicity, no lost COMMITTED, nothing applied that was not asked for.
	final := map[string]bool{}
	defer s.checkLinear(final)
	for _, cl := range s.clients {
		tx := cl.req.TxID
		r, inInv := inv.Reservations[tx]
		c, inPay := pay.Charges[tx]
		o, inOrd := ord.Orders[tx]
		n := b2u(inInv) + b2u(inPay) + b2u(inOrd)
		committed := n == 3
		if n == 0 || n == 3 {
			final[tx] = committed
		}
		if n != 0 && n != 3 {
			s.violate("atomicity", "%s committed at some services only: inventory %v, payment %v, order %v", tx, inInv, inPay, inOrd)
		}
		cs, known := coord.State(tx)
		switch {
		case committed && cs != twopc.CoordCommitted && (known || s.p.retention == 0):
			s.violate("atomicity", "%s committed at every service but the coordinator has it %v (known %v)", tx, cs, known)
		case n == 0 && known && (cs == twopc.CoordCommitted || cs == twopc.CoordCommitting):
			s.violate("atomicity", "%s committed by the coordinator but at no service", tx)
		}
		if cl.first != nil {
			if cl.first.Committed && !committed {
				s.violate("lost-commit", "%s: client heard COMMITTED, final state has inventory %v, payment %v, order %v", tx, inInv, inPay, inOrd)
			}
			if !cl.first.Committed && n > 0 {
				s.violate("outcome", "%s: client heard %s, but it is applied at %d services", tx, status(*cl.first), n)
			}
		}
		if committed {
			s.res.Committed++
			q := cl.req
			same := len(r.Items) == len(q.Items) && len(o.Items) == len(q.Items) &&
				c.UserID == q.UserID && c.Amount == q.Amount && o.UserID == q.UserID && o.Amount == q.Amount
			for i := 0; same && i < len(q.Items); i++ {
				same = r.Items[i].ItemID == q.Items[i].ItemID && r.Items[i].Quantity == q.Items[i].Quantity && o.Items[i] == q.Items[i]
			}
			if !same {
				s.violate("atomicity", "%s applied a different operation: reservation %+v, charge %+v, order %+v, request %+v", tx, r, c, o, q)
			}
		} else {
			s.res.Aborted++
		}
	}
	for _, tx := range unknownTxs(s.byTx, inv.Reservations, pay.Charges, ord.Orders) {
		s.violate("duplicate", "%s is applied but no client asked for it", tx)
	}

	// Cross-service conservation: what inventory sold and payment captured
	// is exactly what the committed orders say.
	sold := map[string]int64{}
	spent := map[string]money.Cents{}
	for _, o := range ord.Orders {
		for _, it := range o.Items {
			sold[it.ItemID] += it.Quantity
		}
		spent[o.UserID] += o.Amount
	}
	for id, it := range inv.Items {
		if it.Sold != sold[id] {
			s.violate("conservation", "item %s: inventory sold %d, orders say %d", id, it.Sold, sold[id])
		}
	}
	for id, a := range pay.Accounts {
		if a.Captured != spent[id] {
			s.violate("conservation", "account %s: captured %s, orders say %s", id, a.Captured, spent[id])
		}
	}

	s.checkReplay()
}

func unknownTxs(known map[string]*client, ms ...any) []string {
	set := map[string]bool{}
	add := func(tx string) {
		if known[tx] == nil {
			set[tx] = true
		}
	}
	for _, m := range ms {
		switch m := m.(type) {
		case map[string]inventory.Reservation:
			for tx := range m {
				add(tx)
			}
		case map[string]payment.Charge:
			for tx := range m {
				add(tx)
			}
		case map[string]order.Order:
			for tx := range m {
				add(tx)
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// checkReplay stops every component as a clean shutdown does (closing its
// log makes it durable), then replays each component's log twice with the
// driver's node.Replay, each time into fresh machines on a copy of its
// disk, and checks both replays give the state the live component had.
func (s *Sim) checkReplay() {
	if s.replicated() {
		s.checkReplicaReplay()
	}
	for _, c := range s.comps {
		if c.role == roleReplica {
			continue
		}
		if err := c.log.Close(); err != nil {
			s.violate("replay", "%s: close: %v", c.id, err)
			return
		}
		var states [2]any
		for k := range states {
			st, err := s.replayState(c)
			if err != nil {
				s.violate("replay", "%s: replay %d: %v", c.id, k+1, err)
				return
			}
			states[k] = st
		}
		live := s.liveState(c)
		if !reflect.DeepEqual(states[0], states[1]) {
			s.violate("replay", "%s: two replays of the same log differ:\n%+v\n%+v", c.id, states[0], states[1])
		}
		if !reflect.DeepEqual(states[0], live) {
			s.violate("replay", "%s: the log replays to a state other than the live one:\nreplayed %+v\nlive     %+v", c.id, states[0], live)
		}
	}
}

func (s *Sim) liveState(c *comp) any {
	if c.role == roleCoord {
		return coordStates(c.coord, s.clients)
	}
	return c.res.state()
}

func coordStates(m *twopc.Coordinator, clients []*client) map[string]string {
	out := map[string]string{}
	for _, cl := range clients {
		if st, ok := m.State(cl.req.TxID); ok {
			out[cl.req.TxID] = st.String()
		} else if m.Expired(cl.req.TxID) {
			out[cl.req.TxID] = "EXPIRED"
		}
	}
	return out
}

// replayState replays c's log on a copy of its disk into a fresh machine
// (Restore only, no Start) and returns the state it rebuilds.
func (s *Sim) replayState(c *comp) (any, error) {
	l, err := wal.Open(s.logConfig(c, c.fs.Clone()))
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var restore func(twopc.Record) error
	var state func() any
	var after uint64
	if c.role == roleCoord {
		m, err := twopc.NewCoordinator(twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 1, RetryBase: 1, RetryMax: 1})
		if err != nil {
			return nil, err
		}
		restore, state = m.Restore, func() any { return coordStates(m, s.clients) }
		if after, _, err = coordinator.LoadSnapshot(c.fs.Clone(), s.snapDir(c), m); err != nil {
			return nil, err
		}
	} else {
		res := s.newResource(c.id)
		m, err := twopc.NewParticipant(twopc.ParticipantConfig{ID: c.id, Coordinator: twopc.CoordinatorID,
			LockTimeout: 1, InquireAfter: 1, InquireMax: 1, Retention: twopc.ParticipantRetention(s.p.retention)}, res)
		if err != nil {
			return nil, err
		}
		restore, state = m.Restore, res.state
		if after, err = s.loadSnapshot(c, c.fs.Clone(), m, res); err != nil {
			return nil, err
		}
	}
	if err := node.ReplayAfter(l, restore, node.Hooks{Mutants: s.mutants}, after); err != nil {
		return nil, err
	}
	return state(), nil
}

func (s *Sim) finishResult() Result {
	s.res.Hash = s.hash.h
	for _, c := range s.comps {
		if (c.role == roleCoord || c.role == roleReplica) && c.coord != nil {
			s.res.TxRestarts += c.coord.DeadlockStats().Restarts
		}
	}
	for _, c := range s.comps {
		if c.part != nil {
			s.res.Forgotten += c.part.Forgotten()
		}
	}
	return s.res
}
