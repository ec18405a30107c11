package server_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/examples/shipping"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

// TestFourParticipants runs purchases across inventory, payment, order and
// the example shipping service (a user's own participant, built on the
// SDK), all over gRPC, and checks that every committed order shipped
// exactly one parcel and that nothing else shipped.
//
// With TLS on, shipping runs with its own certificate
// (dtx://participant/shipping) and the coordinator takes its messages
// because it is one of the purchase's participants.
func TestFourParticipants(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "tls"}[secure], func(t *testing.T) { fourParticipants(t, secure) })
	}
}

func fourParticipants(t *testing.T, secure bool) {
	c := newCluster(t)
	if secure {
		names := append([]string{twopc.CoordinatorID, "client/test", "admin/test", shipping.ID}, engine.Services...)
		files, err := server.WriteCerts(filepath.Join(c.dir, "certs"), names, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.tls = files
		c.web = &client.HTTP{}
		if _, c.web.TLS, err = files["admin/test"].Load(); err != nil {
			t.Fatal(err)
		}
		if _, c.cliTLS, err = files["client/test"].Load(); err != nil {
			t.Fatal(err)
		}
	}
	c.extra[shipping.ID] = server.Service{
		// 4 zones of 60 parcels for 300 purchases: some are turned down
		// even when a loaded machine rolls back a few dozen elsewhere
		// (with 75, 24 rollbacks by timeouts once left every zone room).
		NewResource: func() (participant.Resource, error) { return shipping.New(4, 60), nil },
		State:       func(r participant.Resource) any { return r.(*shipping.Store).State() },
		Check:       func(r participant.Resource) error { return r.(*shipping.Store).Check() },
	}
	c.start()
	reqs := genRequests(t, c.world, 300, 4, "s-")
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
	// 4 zones of 60 parcels: shipping must have turned some purchases down.
	if noSlot == 0 {
		t.Errorf("shipping never voted NO (capacity 240 for %d purchases)", len(reqs))
	}
	t.Logf("%d parcels shipped; %d purchases rolled back by shipping", len(st.Shipped), noSlot)
}
