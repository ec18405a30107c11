// Package pgshipping is the example shipping service (see
// examples/shipping) with its state in PostgreSQL instead of its own log:
// a user's fourth participant, on its own tables, through the participant
// SDK's PostgreSQL adapter (participant/pgpart).
//
// The service writes only the branch's work (Work): it locks the buyer's
// delivery zone row (SELECT … FOR UPDATE), checks a parcel slot is free,
// takes it and records the parcel. pgpart does the rest: BEGIN, PREPARE
// TRANSACTION, COMMIT PREPARED or ROLLBACK PREPARED as the coordinator
// decides, recovery of prepared transactions after a crash.
//
// Tables (created on first use):
//
//	pgship_zones   (id, capacity, free)       CHECK 0 <= free <= capacity
//	pgship_parcels (tx, zone, user_id, lines) one row per shipped purchase
//
// Per zone, in the committed rows: free + parcels == capacity. A prepared
// branch holds its zone's row lock until its decision (PostgreSQL keeps a
// prepared transaction's row locks), so the zone is named in the branch's
// dtx lock keys too: branches of one zone queue in dtx's lock table, where
// deadlock detection sees them, and not inside PostgreSQL.
package pgshipping

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dtx-dev/dtx/participant/pgpart"
	"github.com/dtx-dev/dtx/purchase"
)

// ID is the service's node name.
const ID = "shipping"

// Work is the shipping branch's work; Zones is the number of zones
// (zone-0 …), which must match the table's.
type Work struct{ Zones int }

var _ pgpart.Work = Work{}

// ZoneOf returns the delivery zone of a buyer.
func (w Work) ZoneOf(user string) string {
	h := fnv.New32a()
	h.Write([]byte(user))
	return fmt.Sprintf("zone-%d", h.Sum32()%uint32(w.Zones))
}

func decode(op []byte) (purchase.Request, error) {
	var r purchase.Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the buyer's zone.
func (w Work) Keys(_ string, op []byte) ([]string, error) {
	r, err := decode(op)
	if err != nil {
		return nil, err
	}
	return []string{"zone:" + w.ZoneOf(r.UserID)}, nil
}

// Prepare books a parcel in the buyer's zone if the zone has room.
func (w Work) Prepare(ctx context.Context, q pgpart.Querier, tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	zone := w.ZoneOf(r.UserID)
	var free int64
	if err := q.QueryRow(ctx, "SELECT free FROM pgship_zones WHERE id = $1 FOR UPDATE", zone).Scan(&free); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("no delivery zone %s", zone)
		}
		return err
	}
	if free < 1 {
		return fmt.Errorf("no delivery slot left in %s", zone)
	}
	if _, err := q.Exec(ctx, "UPDATE pgship_zones SET free = free - 1 WHERE id = $1", zone); err != nil {
		return err
	}
	_, err = q.Exec(ctx, "INSERT INTO pgship_parcels (tx, zone, user_id, lines) VALUES ($1, $2, $3, $4)", tx, zone, r.UserID, len(r.Lines()))
	return err
}

// EnsureSchema creates the tables and, if they are empty, the zones with
// capacity parcels each. It never touches rows that may be locked by a
// prepared transaction (those are resolved by the adapter's recovery,
// which runs after this).
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, zones int, capacity int64) error {
	if zones < 1 || capacity < 0 {
		return fmt.Errorf("pgshipping: need zones >= 1 and capacity >= 0 (got %d, %d)", zones, capacity)
	}
	return pgx.BeginFunc(ctx, pool, func(t pgx.Tx) error {
		for _, q := range []string{
			"SELECT pg_advisory_xact_lock(1685354545, 100)",
			`CREATE TABLE IF NOT EXISTS pgship_zones (
				id       text PRIMARY KEY,
				capacity bigint NOT NULL CHECK (capacity >= 0),
				free     bigint NOT NULL CHECK (free >= 0 AND free <= capacity))`,
			`CREATE TABLE IF NOT EXISTS pgship_parcels (
				tx      text PRIMARY KEY,
				zone    text NOT NULL REFERENCES pgship_zones (id),
				user_id text NOT NULL,
				lines   integer NOT NULL CHECK (lines > 0))`,
		} {
			if _, err := t.Exec(ctx, q); err != nil {
				return fmt.Errorf("pgshipping: schema: %w", err)
			}
		}
		var n int
		if err := t.QueryRow(ctx, "SELECT count(*) FROM pgship_zones").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			if n != zones {
				return fmt.Errorf("pgshipping: the database has %d zones, not %d", n, zones)
			}
			return nil
		}
		for i := range zones {
			if _, err := t.Exec(ctx, "INSERT INTO pgship_zones (id, capacity, free) VALUES ($1, $2, $2)", fmt.Sprintf("zone-%d", i), capacity); err != nil {
				return err
			}
		}
		return nil
	})
}

// Zone is one zone's committed state.
type Zone struct {
	Capacity int64 `json:"capacity"`
	Free     int64 `json:"free"`
	Shipped  int64 `json:"shipped"`
}

// Parcel is one shipped purchase.
type Parcel struct {
	Zone   string `json:"zone"`
	UserID string `json:"user_id"`
	Lines  int    `json:"lines"`
}

// State is the service's committed state, read from the rows.
type State struct {
	Zones   map[string]Zone   `json:"zones"`
	Shipped map[string]Parcel `json:"shipped"`
}

// ReadState reads the committed state in one snapshot.
func ReadState(ctx context.Context, pool *pgxpool.Pool) (State, error) {
	st := State{Zones: map[string]Zone{}, Shipped: map[string]Parcel{}}
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(t pgx.Tx) error {
		rows, _ := t.Query(ctx, "SELECT z.id, z.capacity, z.free, count(p.tx) FROM pgship_zones z LEFT JOIN pgship_parcels p ON p.zone = z.id GROUP BY z.id")
		var id string
		var z Zone
		if _, err := pgx.ForEachRow(rows, []any{&id, &z.Capacity, &z.Free, &z.Shipped}, func() error {
			st.Zones[id] = z
			return nil
		}); err != nil {
			return err
		}
		rows, _ = t.Query(ctx, "SELECT tx, zone, user_id, lines FROM pgship_parcels")
		var tx string
		var p Parcel
		_, err := pgx.ForEachRow(rows, []any{&tx, &p.Zone, &p.UserID, &p.Lines}, func() error {
			st.Shipped[tx] = p
			return nil
		})
		return err
	})
	return st, err
}

// Check verifies free + shipped == capacity per zone.
func (st State) Check() error {
	for id, z := range st.Zones {
		if z.Free < 0 || z.Free+z.Shipped != z.Capacity {
			return fmt.Errorf("pgshipping: zone %s does not add up: %+v", id, z)
		}
	}
	return nil
}
