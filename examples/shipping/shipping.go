// Package shipping is an example of a user's own participant: a shipping
// service that books a parcel in the buyer's delivery zone for every
// purchase, beside the built-in inventory, payment and order services.
//
// It is written against the participant SDK only: it implements
// participant.Resource (Keys, Prepare, Commit, Abort) on its own state, and
// the SDK supplies the rest — its write-ahead log, strict two-phase
// locking, duplicate, late and out-of-order message protection, in-doubt
// recovery after a crash. cmd/shipping runs it as a networked process with
// package server; the coordinator includes it in every purchase when it is
// listed in its participants (dtx serve coordinator --participants
// inventory,payment,order,shipping --peer shipping=ADDR).
//
// Every zone has a capacity of parcels. A branch books one parcel at
// PREPARE (escrow: the zone's free count goes down at once, under the
// service's single loop, so the zone itself needs no lock held across the
// two phases; the branch locks only its own parcel id), ships it at COMMIT
// and frees it at ABORT. Per zone, at all times:
// free + booked + shipped == capacity.
package shipping

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
)

// ID is the service's node name.
const ID = "shipping"

// Zone is the parcel capacity of one delivery zone.
type Zone struct {
	Capacity int64 `json:"capacity"`
	Free     int64 `json:"free"`
	Booked   int64 `json:"booked"`  // by prepared branches
	Shipped  int64 `json:"shipped"` // by committed branches
}

// Parcel is one purchase's parcel.
type Parcel struct {
	Zone   string `json:"zone"`
	UserID string `json:"user_id"`
	Lines  int    `json:"lines"` // order lines in the parcel
}

// Store is the shipping service's state. It implements participant.Resource.
type Store struct {
	zones   map[string]*Zone
	booked  map[string]Parcel
	shipped map[string]Parcel
}

var _ participant.Resource = (*Store)(nil)

// New returns a store with n zones ("zone-0" ...) of capacity parcels each.
func New(n int, capacity int64) *Store {
	s := &Store{zones: map[string]*Zone{}, booked: map[string]Parcel{}, shipped: map[string]Parcel{}}
	for i := range n {
		s.zones[fmt.Sprintf("zone-%d", i)] = &Zone{Capacity: capacity, Free: capacity}
	}
	return s
}

// ZoneOf returns the delivery zone of a buyer.
func (s *Store) ZoneOf(user string) string {
	h := fnv.New32a()
	h.Write([]byte(user))
	return fmt.Sprintf("zone-%d", h.Sum32()%uint32(len(s.zones)))
}

func decode(op []byte) (purchase.Request, error) {
	var r purchase.Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the parcel id (the transaction id): zones are escrowed.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	if _, err := decode(op); err != nil {
		return nil, err
	}
	return []string{"parcel:" + tx}, nil
}

// Prepare books a parcel in the buyer's zone if the zone has room.
func (s *Store) Prepare(tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	if _, ok := s.shipped[tx]; ok {
		return fmt.Errorf("parcel %s already shipped", tx)
	}
	zone := s.ZoneOf(r.UserID)
	z := s.zones[zone]
	if z.Free < 1 {
		return fmt.Errorf("no delivery slot left in %s", zone)
	}
	z.Free--
	z.Booked++
	s.booked[tx] = Parcel{Zone: zone, UserID: r.UserID, Lines: len(r.Lines())}
	return nil
}

// Commit ships the booked parcel.
func (s *Store) Commit(tx string, _ []byte) {
	p, ok := s.booked[tx]
	if !ok {
		panic("shipping: commit of an unprepared branch " + tx) // the SDK guarantees it
	}
	z := s.zones[p.Zone]
	z.Booked--
	z.Shipped++
	delete(s.booked, tx)
	s.shipped[tx] = p
}

// Abort frees the booked parcel.
func (s *Store) Abort(tx string, _ []byte) {
	p, ok := s.booked[tx]
	if !ok {
		return
	}
	z := s.zones[p.Zone]
	z.Booked--
	z.Free++
	delete(s.booked, tx)
}

// State is the service's state as JSON.
type State struct {
	Zones   map[string]Zone   `json:"zones"`
	Shipped map[string]Parcel `json:"shipped"` // committed
	Booked  map[string]Parcel `json:"booked,omitempty"`
}

// State returns a copy of the state.
func (s *Store) State() State {
	st := State{Zones: map[string]Zone{}, Shipped: maps.Clone(s.shipped), Booked: maps.Clone(s.booked)}
	for id, z := range s.zones {
		st.Zones[id] = *z
	}
	return st
}

// Check verifies free + booked + shipped == capacity per zone, with
// nothing negative, and that parcels add up.
func (s *Store) Check() error {
	booked, shipped := map[string]int64{}, map[string]int64{}
	for _, p := range s.booked {
		booked[p.Zone]++
	}
	for _, p := range s.shipped {
		shipped[p.Zone]++
	}
	for _, id := range slices.Sorted(maps.Keys(s.zones)) {
		z := s.zones[id]
		switch {
		case z.Free < 0 || z.Booked < 0 || z.Shipped < 0:
			return fmt.Errorf("shipping: zone %s has a negative count: %+v", id, *z)
		case z.Free+z.Booked+z.Shipped != z.Capacity:
			return fmt.Errorf("shipping: zone %s does not add up: %+v", id, *z)
		case z.Booked != booked[id] || z.Shipped != shipped[id]:
			return fmt.Errorf("shipping: zone %s: booked %d/shipped %d but parcels say %d/%d", id, z.Booked, z.Shipped, booked[id], shipped[id])
		}
	}
	return nil
}
