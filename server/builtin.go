package server

import (
	"fmt"
	"time"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
)

// Builtin returns an OpenService for one of the example services
// (inventory, payment, order): it reads DIR/world.json, or writes world
// there (the built-in example world if nil) for a new directory, as the
// embedded engine does. Payment checks card expiry against today (zero:
// the current date).
func Builtin(id string, world *purchase.World, today time.Time) (func(dir string) (Service, error), error) {
	switch id {
	case inventory.ID, payment.ID, order.ID:
	default:
		return nil, fmt.Errorf("server: %q is not a built-in service (inventory, payment, order)", id)
	}
	return func(dir string) (Service, error) {
		w, _, err := engine.LoadWorld(dir, world)
		if err != nil {
			return Service{}, err
		}
		day := today
		if day.IsZero() {
			day = time.Now()
		}
		switch id {
		case inventory.ID:
			return Service{
				NewResource: func() (participant.Resource, error) { return inventory.New(w), nil },
				State:       func(r participant.Resource) any { return r.(*inventory.Store).State() },
				Check:       func(r participant.Resource) error { return r.(*inventory.Store).Check() },
			}, nil
		case payment.ID:
			return Service{
				NewResource: func() (participant.Resource, error) { return payment.New(w, day), nil },
				State:       func(r participant.Resource) any { return r.(*payment.Store).State() },
				Check:       func(r participant.Resource) error { return r.(*payment.Store).Check() },
			}, nil
		default:
			return Service{
				NewResource: func() (participant.Resource, error) { return order.New(), nil },
				State:       func(r participant.Resource) any { return r.(*order.Store).State() },
			}, nil
		}
	}, nil
}
