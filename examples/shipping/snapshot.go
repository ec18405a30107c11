package shipping

import (
	"bytes"
	"encoding/gob"
	"fmt"

	"github.com/dtx-dev/dtx/participant"
)

var _ participant.Snapshotter = (*Store)(nil)

type snapState struct {
	Zones   map[string]Zone
	Booked  map[string]Parcel
	Shipped map[string]Parcel
}

// Snapshot implements participant.Snapshotter: the SDK then compacts the
// service's log behind it.
func (s *Store) Snapshot() ([]byte, error) {
	st := snapState{Zones: make(map[string]Zone, len(s.zones)), Booked: s.booked, Shipped: s.shipped}
	for id, z := range s.zones {
		st.Zones[id] = *z
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(st); err != nil {
		return nil, fmt.Errorf("shipping: snapshot: %w", err)
	}
	return b.Bytes(), nil
}

// RestoreSnapshot implements participant.Snapshotter.
func (s *Store) RestoreSnapshot(b []byte) error {
	var st snapState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("shipping: snapshot: %w", err)
	}
	s.zones = make(map[string]*Zone, len(st.Zones))
	for id, z := range st.Zones {
		s.zones[id] = &z
	}
	s.booked, s.shipped = st.Booked, st.Shipped
	if s.booked == nil {
		s.booked = map[string]Parcel{}
	}
	if s.shipped == nil {
		s.shipped = map[string]Parcel{}
	}
	return nil
}
