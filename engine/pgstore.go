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

// openStore opens Config.Store's database for the services, if set: the
// world seeds it on first use; each service becomes a PostgreSQL
// participant (pgstore) with its participant log still in the data
// directory.
func (e *Engine) openStore(w purchase.World, fresh bool) error {
	marker := filepath.Join(e.cfg.DataDir, storeMarker)
	_, err := os.Stat(marker)
	hasMarker := err == nil
	switch {
	case e.cfg.Store == "" && hasMarker:
		return fmt.Errorf("engine: data directory %s keeps its services' state in PostgreSQL: give its --store", e.cfg.DataDir)
	case e.cfg.Store == "":
		return nil
	case !pgstore.IsURL(e.cfg.Store):
		return fmt.Errorf("engine: store %q is not a postgres:// URL", e.cfg.Store)
	case !hasMarker && !fresh:
		return fmt.Errorf("engine: data directory %s keeps its services' state in its logs; it cannot move to a --store", e.cfg.DataDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := pgstore.Open(ctx, pgstore.Config{DSN: e.cfg.Store, World: w, Today: e.cfg.Today, LockTimeout: e.cfg.LockTimeout, Logger: e.cfg.Logger})
	if err != nil {
		return err
	}
	e.pg = pg
	if !hasMarker {
		if err := writeFileSync(marker, []byte("postgres\n")); err != nil {
			return errors.Join(errors.New("engine: store marker"), err)
		}
	}
	return nil
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
