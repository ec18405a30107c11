// Package services is the registry of the built-in services: the one place
// that knows which exist (inventory, payment, order), how each is built
// from a data directory's world, how its state is shown and read back, and
// how its invariants are checked. The embedded engine, `dtx serve`, the
// cluster tooling, the simulator and the bench all go through it, so a
// fourth built-in service is its own package plus one entry here.
//
// A user's own participant (examples/shipping) is not built in: it is
// written against the participant SDK and runs as its own process.
package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
	"github.com/dtx-dev/dtx/twopc"
)

// Service describes one built-in service.
type Service struct {
	// ID is its node name, and the name of its log directory.
	ID string
	// New returns its Resource in its initial state, built from the world
	// (DIR/world.json); today is the date it checks cards against.
	New func(w purchase.World, today time.Time) twopc.Resource
	// View returns the state of a Resource made by New, as `dtx state` and
	// GET /v1/state show it (JSON).
	View func(r twopc.Resource) any
	// Check verifies its own invariants on a Resource made by New.
	Check func(r twopc.Resource) error

	set    func(st *State, r twopc.Resource)
	decode func(st *State, data []byte) error
}

// entry builds a Service from a service's own constructor, state view and
// checker; field says where its view goes in State.
func entry[R interface {
	twopc.Resource
	State() V
	Check() error
}, V any](id string, newRes func(purchase.World, time.Time) R, field func(*State) *V) Service {
	return Service{
		ID:     id,
		New:    func(w purchase.World, today time.Time) twopc.Resource { return newRes(w, today) },
		View:   func(r twopc.Resource) any { return r.(R).State() },
		Check:  func(r twopc.Resource) error { return r.(R).Check() },
		set:    func(st *State, r twopc.Resource) { *field(st) = r.(R).State() },
		decode: func(st *State, data []byte) error { return json.Unmarshal(data, field(st)) },
	}
}

// builtin lists the built-in services in PREPARE order.
var builtin = []Service{
	entry(inventory.ID, func(w purchase.World, _ time.Time) *inventory.Store { return inventory.New(w) },
		func(st *State) *inventory.State { return &st.Inventory }),
	entry(payment.ID, payment.New,
		func(st *State) *payment.State { return &st.Payment }),
	entry(order.ID, func(purchase.World, time.Time) *order.Store { return order.New() },
		func(st *State) *order.State { return &st.Order }),
}

// Builtin returns every built-in service, in PREPARE order.
func Builtin() []Service { return slices.Clone(builtin) }

// IDs returns the names of the built-in services, in PREPARE order.
func IDs() []string {
	ids := make([]string, len(builtin))
	for i, s := range builtin {
		ids[i] = s.ID
	}
	return ids
}

// Lookup returns the built-in service named id.
func Lookup(id string) (Service, bool) {
	i := slices.IndexFunc(builtin, func(s Service) bool { return s.ID == id })
	if i < 0 {
		return Service{}, false
	}
	return builtin[i], true
}

// ErrUnknown is returned for a name that is not a built-in service.
var ErrUnknown = errors.New("not a built-in service")

func lookup(id string) (Service, error) {
	s, ok := Lookup(id)
	if !ok {
		return Service{}, fmt.Errorf("services: %q: %w (%v)", id, ErrUnknown, IDs())
	}
	return s, nil
}

// State is the state of a whole deployment of the built-in services, as
// `dtx state` prints it: each service's view, every in-doubt branch and
// the coordinator's status.
type State struct {
	Inventory inventory.State `json:"inventory"`
	Payment   payment.State   `json:"payment"`
	Order     order.State     `json:"order"`
	// InDoubt lists "service/tx" for every prepared branch without a
	// decision (empty after recovery).
	InDoubt     []string    `json:"in_doubt"`
	Coordinator CoordStatus `json:"coordinator"`
}

// CoordStatus is the coordinator's part of State.
type CoordStatus struct {
	Epoch    uint64 `json:"epoch"`
	Inflight int    `json:"inflight"`
}

// Set puts the view of service id's Resource r (made by its New) into st.
func (st *State) Set(id string, r twopc.Resource) error {
	s, err := lookup(id)
	if err != nil {
		return err
	}
	s.set(st, r)
	return nil
}

// SetJSON puts service id's view, as JSON (GET /v1/state), into st.
func (st *State) SetJSON(id string, data []byte) error {
	s, err := lookup(id)
	if err != nil {
		return err
	}
	return s.decode(st, data)
}

// CheckAtomic returns one error per transaction that is committed at some
// built-in services and not at others, or whose records disagree: every
// committed order has exactly one reservation and one charge, for the same
// items, buyer and amount, and nothing else does.
func CheckAtomic(st *State) []error {
	var errs []error
	ids := map[string]bool{}
	for tx := range st.Order.Orders {
		ids[tx] = true
	}
	for tx := range st.Inventory.Reservations {
		ids[tx] = true
	}
	for tx := range st.Payment.Charges {
		ids[tx] = true
	}
	for _, tx := range slices.Sorted(func(yield func(string) bool) {
		for id := range ids {
			if !yield(id) {
				return
			}
		}
	}) {
		o, inOrder := st.Order.Orders[tx]
		r, inInv := st.Inventory.Reservations[tx]
		c, inPay := st.Payment.Charges[tx]
		if !inOrder || !inInv || !inPay {
			errs = append(errs, fmt.Errorf("atomicity: %s committed partially (order %v, inventory %v, payment %v)", tx, inOrder, inInv, inPay))
			continue
		}
		if !sameItems(r.Items, o.Items) || c.UserID != o.UserID || c.Amount != o.Amount {
			errs = append(errs, fmt.Errorf("atomicity: %s records disagree: order %+v, reservation %+v, charge %+v", tx, o, r, c))
		}
	}
	return errs
}

func sameItems(r []inventory.ReservedItem, o []purchase.LineItem) bool {
	if len(r) != len(o) {
		return false
	}
	for i := range r {
		if r[i].ItemID != o[i].ItemID || r[i].Quantity != o[i].Quantity {
			return false
		}
	}
	return true
}
