package server_test

import (
	"encoding/json"
	"testing"

	"github.com/dtx-dev/dtx/examples/shipping"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/server"
)

// TestFourParticipants runs purchases across inventory, payment, order and
// the example shipping service (a user's own participant, built on the
// SDK), all over gRPC, and checks that every committed order shipped
// exactly one parcel and that nothing else shipped.
func TestFourParticipants(t *testing.T) {
	c := newCluster(t)
	c.extra[shipping.ID] = server.Service{
		NewResource: func() (participant.Resource, error) { return shipping.New(4, 75), nil },
		State:       func(r participant.Resource) any { return r.(*shipping.Store).State() },
		Check:       func(r participant.Resource) error { return r.(*shipping.Store).Check() },
	}
	c.start()
	reqs := genRequests(t, c.world, 400, 4, "s-")
	outcomes := runAll(t, c.client(), reqs, 32)
	cs := c.waitQuiet()
	checkOutcomes(t, cs, outcomes)
	var st shipping.State
	if err := json.Unmarshal(cs.Services[shipping.ID].State, &st); err != nil {
		t.Fatal(err)
	}
	noSlot := 0
	for tx, o := range outcomes {
		_, shipped := st.Shipped[tx]
		if shipped != o.Committed {
			t.Errorf("%s: committed=%v but shipped=%v", tx, o.Committed, shipped)
		}
		if !o.Committed && len(o.Reason) > 9 && o.Reason[:9] == "shipping:" {
			noSlot++
		}
	}
	if len(st.Shipped) != len(cs.State.Order.Orders) {
		t.Errorf("%d parcels shipped for %d orders", len(st.Shipped), len(cs.State.Order.Orders))
	}
	// 4 zones of 75 parcels: shipping must have turned some purchases down.
	if noSlot == 0 {
		t.Errorf("shipping never voted NO (capacity 300 for %d purchases)", len(reqs))
	}
	t.Logf("%d parcels shipped; %d purchases rolled back by shipping", len(st.Shipped), noSlot)
}
