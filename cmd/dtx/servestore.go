package main

import (
	"context"
	"time"

	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/payment"
	"github.com/dtx-dev/dtx/services/pgstore"
)

// builtinService returns server.Builtin's service (refused on a data
// directory made with a store), or with store set the
// same service with its state in that PostgreSQL database (the world
// seeds it on first use; deploy.OpenStore checks and writes the data
// directory's store marker). closeStore closes the database after the
// service has stopped.
func builtinService(id string, world *purchase.World, store string) (open func(dir string) (server.Service, error), closeStore func(), err error) {
	if store == "" {
		open, err := server.Builtin(id, world, time.Time{})
		if err != nil {
			return nil, nil, err
		}
		// A data directory made with --store holds only the protocol's
		// records in its log: without its store it would serve the world's
		// initial state.
		return func(dir string) (server.Service, error) {
			if err := deploy.CheckStore(dir, "", false); err != nil {
				return server.Service{}, err
			}
			return open(dir)
		}, func() {}, nil
	}
	if err := checkStore(store); err != nil {
		return nil, nil, err
	}
	var st *pgstore.Store
	closeStore = func() {
		if st != nil {
			st.Close()
		}
	}
	open = func(dir string) (server.Service, error) {
		w, fresh, err := deploy.LoadWorld(dir, world)
		if err != nil {
			return server.Service{}, err
		}
		st, err = deploy.OpenStore(deploy.StoreConfig{DataDir: dir, Store: store, World: w, Fresh: fresh, Services: []string{id}})
		if err != nil {
			return server.Service{}, err
		}
		read := func() (pgstore.State, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return st.State(ctx)
		}
		return server.Service{
			NewResource: st.NewResource(id),
			State: func(participant.Resource) any {
				s, err := read()
				switch {
				case err != nil:
					return map[string]string{"error": err.Error()}
				case id == inventory.ID:
					return s.Inventory
				case id == payment.ID:
					return s.Payment
				default:
					return s.Order
				}
			},
			Check: func(participant.Resource) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return st.Check(ctx)
			},
		}, nil
	}
	return open, closeStore, nil
}
