package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
		return fmt.Errorf("deploy: data directory %s keeps its services' state in PostgreSQL: give its --store", dir)
	case store == "":
		return nil
	case !pgstore.IsURL(store):
		return fmt.Errorf("deploy: store %q is not a postgres:// URL", store)
	case !hasMarker && !fresh:
		return fmt.Errorf("deploy: data directory %s keeps its services' state in its logs; it cannot move to a --store", dir)
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
		return errors.Join(errors.New("deploy: store marker"), err)
	}
	return nil
}

// StoreConfig says which store the built-in services of a data directory
// keep their state in, and how to open it.
type StoreConfig struct {
	// DataDir is the data directory (its store marker is checked, and
	// written on first use).
	DataDir string
	// Store is the PostgreSQL URL (postgres://…); "" is the services' logs.
	Store string
	// World seeds a new database; Fresh says the data directory is new.
	World purchase.World
	Fresh bool
	// Today, LockTimeout and Logger are pgstore.Config's.
	Today       time.Time
	LockTimeout time.Duration
	Logger      *slog.Logger
	// Services to open adapters for (nil: every built-in service).
	Services []string
}

// OpenStore checks the data directory's store marker against sc.Store and,
// with a store set, opens its database (the world seeds it on first use)
// and marks the directory: each service then becomes a PostgreSQL
// participant (package pgstore) with its participant log still in the data
// directory. With no store it returns nil, nil.
func OpenStore(sc StoreConfig) (*pgstore.Store, error) {
	if err := CheckStore(sc.DataDir, sc.Store, sc.Fresh); err != nil || sc.Store == "" {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := pgstore.Open(ctx, pgstore.Config{DSN: sc.Store, World: sc.World, Today: sc.Today, LockTimeout: sc.LockTimeout, Services: sc.Services, Logger: sc.Logger})
	if err != nil {
		return nil, err
	}
	if err := MarkStore(sc.DataDir); err != nil {
		pg.Close()
		return nil, err
	}
	return pg, nil
}
