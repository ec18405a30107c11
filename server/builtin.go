package server

import (
	"fmt"
	"time"

	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
)

// Builtin returns an OpenService for one of the built-in services (the
// registry, package services): it reads DIR/world.json, or writes world
// there (the built-in example world if nil) for a new directory, as the
// embedded engine does. Payment checks card expiry against today (zero:
// the current date).
func Builtin(id string, world *purchase.World, today time.Time) (func(dir string) (Service, error), error) {
	svc, ok := services.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("server: %q is not a built-in service %v", id, services.IDs())
	}
	return func(dir string) (Service, error) {
		w, _, err := deploy.LoadWorld(dir, world)
		if err != nil {
			return Service{}, err
		}
		day := today
		if day.IsZero() {
			day = time.Now()
		}
		return Service{
			NewResource: func() (participant.Resource, error) { return svc.New(w, day), nil },
			State:       func(r participant.Resource) any { return svc.View(r) },
			Check:       func(r participant.Resource) error { return svc.Check(r) },
		}, nil
	}, nil
}
