package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/twopc"
)

// today is the payment service's date: fixed, so runs are reproducible.
var today = time.Date(2026, time.March, 15, 12, 0, 0, 0, time.UTC)

// worldSpec is the initial state: a few hot items and buyers, so that
// transactions contend for the same locks, stock and money.
type worldSpec struct {
	w     purchase.World
	items []string
	users []string
}

func newWorld(r *rand.Rand) worldSpec {
	ws := worldSpec{w: purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}}
	nItems, nUsers := 2+r.IntN(3), 2+r.IntN(3)
	for i := range nItems {
		id := fmt.Sprintf("item%d", i)
		ws.items = append(ws.items, id)
		ws.w.Items[id] = purchase.Item{Stock: int64(8 + r.IntN(40))}
	}
	for i := range nUsers {
		id := fmt.Sprintf("user%d", i)
		ws.users = append(ws.users, id)
		ws.w.Accounts[id] = purchase.Account{Balance: money.Cents(20000 + r.IntN(100000))}
	}
	return ws
}

// client is one transaction's client: it submits, waits, resubmits the same
// transaction_id when it hears nothing in time, and sometimes resubmits
// after hearing (an idempotency check).
type client struct {
	idx     int
	req     purchase.Request
	op      []byte
	first   *twopc.Outcome // first outcome heard
	waiting bool           // a submission is unanswered
	gen     uint64         // bumps with each submission
	submits int
	extra   int    // resubmissions after an answer still to make
	callAt  uint64 // tick of the latest submission
	// outAt is the tick the coordinator first reported an outcome of the
	// id (recovered ones included; 0: none yet).
	outAt uint64
	// finAt is the tick the coordinator last logged the id's END or
	// ABORT: its outcome entered the retained table then (0: never). The
	// window runs from there, which may be long before the client hears
	// the outcome (a coordinator that crashed after deciding answers the
	// resubmission that comes after its restart).
	finAt uint64
	// expired: a resubmission was refused as expired before the client
	// heard any outcome (the coordinator decided, and forgot, while the
	// client could not reach it): its answer, "whether it committed is no
	// longer known".
	expired bool
}

func (s *Sim) makeClients() {
	r := s.rng
	for i := range s.cfg.Txs {
		pick := func() string {
			if r.IntN(5) < 3 {
				return s.world.items[0] // the hottest item
			}
			return s.world.items[r.IntN(len(s.world.items))]
		}
		items := []purchase.LineItem{{ItemID: pick(), Quantity: int64(1 + r.IntN(3)), Price: money.Cents(100 + r.IntN(4000))}}
		if r.IntN(3) == 0 { // a second item, in random order: deadlocks inside inventory too
			if second := s.world.items[r.IntN(len(s.world.items))]; second != items[0].ItemID {
				items = append(items, purchase.LineItem{ItemID: second, Quantity: int64(1 + r.IntN(2)), Price: money.Cents(100 + r.IntN(2000))})
			}
		}
		user := s.world.users[r.IntN(len(s.world.users))]
		if r.IntN(2) == 0 {
			user = s.world.users[0]
		}
		req := purchase.Request{
			TxID:   fmt.Sprintf("t%d", i),
			UserID: user,
			Items:  items,
			Card:   purchase.Card{Last4: "4242", ExpMonth: 1 + r.IntN(12), ExpYear: 2027 + r.IntN(4)},
		}
		switch r.IntN(40) { // business NO votes besides stock and money running out
		case 0:
			req.Items[0].ItemID = "no-such-item"
		case 1:
			req.UserID = "no-such-user"
		case 2:
			req.Card.ExpYear = 2025 // expired
		}
		for _, it := range req.Items {
			a, _ := money.Mul(it.Price, it.Quantity)
			req.Amount += a
		}
		if len(req.Items) == 1 {
			req.ItemID, req.Quantity, req.Price = req.Items[0].ItemID, req.Items[0].Quantity, req.Items[0].Price
		}
		op, err := req.MarshalBinary()
		if err != nil {
			panic(fmt.Sprintf("sim: bad generated request %+v: %v", req, err))
		}
		cl := &client{idx: i, req: req, op: op}
		if r.IntN(4) == 0 {
			cl.extra = 1 + r.IntN(2)
		}
		s.clients = append(s.clients, cl)
		s.byTx[req.TxID] = cl
	}
}

func (s *Sim) scheduleSubmissions() {
	window := max(s.cfg.FaultTicks-10, 1)
	for _, cl := range s.clients {
		s.schedule(&event{at: 1 + uint64(s.rng.Uint64N(window)), kind: evSubmit, client: cl.idx})
	}
}

// submit proposes the client's transaction to the coordinator, or retries
// later if the coordinator is down or busy.
func (s *Sim) submit(cl *client) {
	c := s.pickCoord(-1)
	if c == nil || !c.up {
		s.schedule(&event{at: s.now + 5 + uint64(s.rng.IntN(20)), kind: evSubmit, client: cl.idx})
		return
	}
	if c.role == roleReplica && c.next != nil {
		// Its machine is in the middle of a carry: the submission waits
		// in its inbox, here a little outside it.
		s.schedule(&event{at: s.now + 1 + uint64(s.rng.IntN(3)), kind: evSubmit, client: cl.idx})
		return
	}
	parts := s.parts()
	branches := make([]twopc.Branch, len(parts))
	for i, c := range parts {
		branches[i] = twopc.Branch{Node: c.id, Op: cl.op}
	}
	err := c.coord.Propose(cl.req.TxID, branches)
	if errors.Is(err, twopc.ErrBusy) {
		s.schedule(&event{at: s.now + 10, kind: evSubmit, client: cl.idx})
		return
	}
	since := s.now - cl.outAt
	if cl.finAt > 0 {
		since = s.now - cl.finAt
	}
	if errors.Is(err, twopc.ErrOutcomeExpired) && (cl.first != nil || cl.finAt > 0) && s.p.retention > 0 && since >= s.p.retention {
		// A resubmission that reaches the coordinator more than the window
		// after the outcome entered its table (here one that kept
		// retrying while the coordinator was down, or one that heard the
		// outcome only long after it was decided) may be refused as
		// expired: it is never run again. The client has its answer
		// already, or, if it never heard one (the coordinator decided, or
		// presumed an abort, and forgot while the client could not reach
		// it), "expired" is its answer: whether it committed is no longer
		// known, and the services' states alone are checked. Inside the
		// window the refusal is a violation (below). The sim's ticks count
		// the coordinator's downtime, which its window does not: the check
		// is on the lenient side of that.
		s.tracef("client %s: refused as expired, %d ticks after the outcome (retention %d)", cl.req.TxID, since, s.p.retention)
		cl.waiting = false
		cl.expired = cl.first == nil
		s.res.ExpiredRefusals++
		return
	}
	if err != nil {
		s.violate("client", "propose %s: %v", cl.req.TxID, err)
		return
	}
	cl.submits++
	cl.callAt = s.now
	cl.waiting = true
	cl.gen++
	s.tracef("client %s submits (#%d)", cl.req.TxID, cl.submits)
	s.schedule(&event{at: s.now + s.p.clientTimeout, kind: evClientTimeout, client: cl.idx, gen: cl.gen})
	s.flush(c)
}

// report hands outcomes to their clients and checks that a transaction id
// never gets two different answers, nor runs twice.
func (s *Sim) report(outs []twopc.Outcome) {
	for _, o := range outs {
		cl := s.byTx[o.Tx]
		if cl == nil {
			s.violate("outcome", "outcome for unknown transaction %s", o.Tx)
			continue
		}
		s.hash.addString(o.Tx)
		s.hash.add(b2u(o.Committed), b2u(o.Duplicate), b2u(o.Recovered))
		if cl.first != nil && cl.first.Committed != o.Committed {
			s.violate("outcome", "%s: client heard %s, later %s", o.Tx, status(*cl.first), status(o))
		}
		if cl.outAt == 0 {
			cl.outAt = s.now
		}
		if o.Recovered {
			continue // no client waits for it
		}
		s.tracef("client %s hears %s", o.Tx, status(o))
		if cl.waiting {
			s.linAnswer(cl, o.Committed)
		}
		if cl.first != nil && !o.Duplicate {
			s.violate("duplicate", "%s ran twice: a second outcome not marked duplicate (%s)", o.Tx, status(o))
		}
		if cl.first == nil {
			first := o
			cl.first = &first
		}
		cl.waiting = false
		if cl.extra > 0 {
			cl.extra--
			s.schedule(&event{at: s.now + 1 + uint64(s.rng.IntN(s.p.resubmit)), kind: evSubmit, client: cl.idx})
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func status(o twopc.Outcome) string {
	s := "ROLLED_BACK " + o.Reason
	if o.Committed {
		s = "COMMITTED"
	}
	if o.Duplicate {
		s += " (duplicate)"
	}
	if o.Recovered {
		s += " (recovered)"
	}
	return s
}

// countingResource wraps a built-in service's Resource and counts the
// effects each transaction has in one incarnation (replay included): a
// branch commits at most once, and is prepared at most once without a
// decision in between.
type countingResource struct {
	twopc.Resource
	svc      services.Service
	s        *Sim
	id       string
	prepared map[string]bool
	commits  map[string]int
}

func (s *Sim) newResource(id string) *countingResource {
	svc, ok := services.Lookup(id)
	if !ok {
		panic("sim: not a built-in service: " + id)
	}
	return &countingResource{Resource: svc.New(s.world.w, today), svc: svc, s: s, id: id, prepared: map[string]bool{}, commits: map[string]int{}}
}

func (r *countingResource) Prepare(tx string, op []byte) error {
	return r.count(tx, r.Resource.Prepare(tx, op))
}

// ReplayPrepare replays a prepare the way the service does (its own
// ReplayPrepare, if it has one: twopc.ReplayPreparer) and counts it as
// Prepare does. A service that skips its duplicate-order check on replay
// must be right that the id is new: checked here on every replayed
// prepare.
func (r *countingResource) ReplayPrepare(tx string, attempt uint32, op []byte) error {
	if p, ok := r.Resource.(interface{ Placed(string) (bool, error) }); ok {
		if placed, err := p.Placed(tx); err == nil && placed {
			r.s.violate("duplicate", "%s: %s replayed as prepared, but the order is placed already", r.id, tx)
		}
	}
	return r.count(tx, twopc.ReplayPrepare(twopc.AsAttemptResource(r.Resource), tx, attempt, op))
}

// count notes a successful prepare of tx.
func (r *countingResource) count(tx string, err error) error {
	if err == nil {
		if r.prepared[tx] {
			r.s.violate("duplicate", "%s: %s prepared twice without a decision", r.id, tx)
		}
		r.prepared[tx] = true
	}
	return err
}

func (r *countingResource) Commit(tx string, op []byte) {
	r.commits[tx]++
	if r.commits[tx] > 1 {
		r.s.violate("duplicate", "%s: %s committed %d times", r.id, tx, r.commits[tx])
	}
	if !r.prepared[tx] {
		r.s.violate("duplicate", "%s: %s committed without being prepared", r.id, tx)
	}
	delete(r.prepared, tx)
	r.Resource.Commit(tx, op)
}

func (r *countingResource) Abort(tx string, op []byte) {
	delete(r.prepared, tx)
	r.Resource.Abort(tx, op)
}

func (r *countingResource) check() error { return r.svc.Check(r.Resource) }

// state returns the service's state view.
func (r *countingResource) state() any { return r.svc.View(r.Resource) }
