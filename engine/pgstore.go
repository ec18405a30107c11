package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/pgstore"
)

// storeMarker, in a data directory, says its services keep their state in
// PostgreSQL: their logs are then only the protocol's records, and the
// directory must always be opened with a store (and never without one).
const storeMarker = "STORE"

// CheckStore checks that a data directory is opened with the store it was
// made with (store "" for the services' logs); fresh says the directory is
// new. MarkStore records a store in a new directory.
func CheckStore(dir, store string, fresh bool) error {
	_, err := os.Stat(filepath.Join(dir, storeMarker))
	hasMarker := err == nil
	switch {
	case store == "" && hasMarker:
		return fmt.Errorf("engine: data directory %s keeps its services' state in PostgreSQL: give its --store", dir)
	case store == "":
		return nil
	case !pgstore.IsURL(store):
		return fmt.Errorf("engine: store %q is not a postgres:// URL", store)
	case !hasMarker && !fresh:
		return fmt.Errorf("engine: data directory %s keeps its services' state in its logs; it cannot move to a --store", dir)
	}
	return nil
}

// MarkStore records in dir that its services' state is in a store.
func MarkStore(dir string) error {
	marker := filepath.Join(dir, storeMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := writeFileSync(marker, []byte("postgres\n")); err != nil {
		return errors.Join(errors.New("engine: store marker"), err)
	}
	return nil
}

// openStore opens Config.Store's database for the services, if set: the
// world seeds it on first use; each service becomes a PostgreSQL
// participant (pgstore) with its participant log still in the data
// directory.
func (e *Engine) openStore(w purchase.World, fresh bool) error {
	if err := CheckStore(e.cfg.DataDir, e.cfg.Store, fresh); err != nil || e.cfg.Store == "" {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := pgstore.Open(ctx, pgstore.Config{DSN: e.cfg.Store, World: w, Today: e.cfg.Today, LockTimeout: e.cfg.LockTimeout, Logger: e.cfg.Logger})
	if err != nil {
		return err
	}
	e.pg = pg
	return MarkStore(e.cfg.DataDir)
}

// storeState fills the services' part of st from the database's rows.
func (e *Engine) storeState(ctx context.Context, st *State) error {
	ps, err := e.pg.State(ctx)
	if err != nil {
		return err
	}
	st.Inventory, st.Payment, st.Order = ps.Inventory, ps.Payment, ps.Order
	return nil
}
