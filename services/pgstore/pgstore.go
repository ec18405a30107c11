// Package pgstore keeps the state of the built-in services (inventory,
// payment, order) in PostgreSQL instead of in their own logs: each one is
// a participant through participant/pgpart, with the same business rules,
// the same vote reasons and the same state JSON as the in-memory services.
//
// Tables (created on first use, seeded from the world once):
//
//	items        (id, stock, available, sold)           CHECK available >= 0, sold >= 0, available + sold = stock
//	reservations (tx, line, item_id, quantity)          committed branches of inventory
//	accounts     (id, initial, balance, captured)       CHECK balance >= 0, captured >= 0, balance + captured = initial
//	charges      (tx, user_id, amount, card)            committed branches of payment
//	orders       (tx, user_id, amount)                  committed branches of order
//	order_items  (tx, line, item_id, quantity, price)
//
// Money is in integer cents (bigint). A branch changes the rows at PREPARE
// (inside its prepared transaction: invisible to others until COMMIT
// PREPARED, gone at ROLLBACK PREPARED), so the committed rows are the
// committed state: "reserved" and "held" amounts are those of prepared
// transactions, which no other session can read, and the state read from
// the rows shows them as 0 (in doubt branches are listed apart).
//
// Each service still has its own participant log (see pgpart's doc: the
// protocol's records), and names every row it changes in its dtx lock
// keys (item:<id>, account:<user>, order:<tx>), as the in-memory services
// do, so waits between branches stay in dtx's lock table and its deadlock
// detection; PostgreSQL's lock_timeout bounds waits for locks held by
// other clients.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/participant/pgpart"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
)

// IsURL reports whether s names a PostgreSQL store (postgres:// or
// postgresql://).
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Config configures a Store.
type Config struct {
	DSN string
	// World seeds a new database (ignored once seeded).
	World purchase.World
	// Today is the payment service's date (card expiry).
	Today time.Time
	// LockTimeout is PostgreSQL's lock_timeout for the branches (default 2s).
	LockTimeout time.Duration
	// Services to open adapters for (default all three). A process that
	// serves one service opens only its own: each adapter holds its
	// service's owner lock in the database.
	Services []string
	Logger   *slog.Logger
}

// Store is the three services' PostgreSQL adapters on one database.
type Store struct {
	pool     *pgxpool.Pool
	adapters map[string]*pgpart.Adapter
}

// Open connects, creates and seeds the tables if needed, and opens one
// adapter per service (each takes its owner lock: one process at a time
// per database).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if !IsURL(cfg.DSN) {
		return nil, fmt.Errorf("pgstore: store %q is not a postgres:// URL", cfg.DSN)
	}
	if cfg.Today.IsZero() {
		cfg.Today = time.Now()
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("pgstore: bad store URL: %w", err)
	}
	if pc.MaxConns < 12 {
		pc.MaxConns = 12
	}
	lt := cfg.LockTimeout
	if lt <= 0 {
		lt = 2 * time.Second
	}
	pc.ConnConfig.RuntimeParams["lock_timeout"] = fmt.Sprint(lt.Milliseconds())
	pc.ConnConfig.RuntimeParams["statement_timeout"] = "10000"
	pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{pool: pool, adapters: map[string]*pgpart.Adapter{}}
	if err := ensureSchema(ctx, pool, cfg.World); err != nil {
		pool.Close()
		return nil, err
	}
	works := map[string]pgpart.Work{
		inventory.ID: invWork{},
		payment.ID:   payWork{year: cfg.Today.Year(), month: int(cfg.Today.Month())},
		order.ID:     orderWork{},
	}
	ids := cfg.Services
	if len(ids) == 0 {
		ids = []string{inventory.ID, payment.ID, order.ID}
	}
	for _, id := range ids {
		if works[id] == nil {
			s.Close()
			return nil, fmt.Errorf("pgstore: %q is not a built-in service (inventory, payment, order)", id)
		}
		a, err := pgpart.Open(ctx, pgpart.Config{Pool: pool, Participant: id, Work: works[id], Logger: cfg.Logger,
			LockTimeout: lt, SweepEvery: 2 * time.Second})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.adapters[id] = a
	}
	return s, nil
}

// NewResource returns service id's participant.Config.NewResource.
func (s *Store) NewResource(id string) func() (participant.Resource, error) {
	a := s.adapters[id]
	return func() (participant.Resource, error) {
		if a == nil {
			return nil, fmt.Errorf("pgstore: no service %q", id)
		}
		return a.NewResource()
	}
}

// Adapter returns service id's adapter.
func (s *Store) Adapter(id string) *pgpart.Adapter { return s.adapters[id] }

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the adapters (their prepared transactions stay: the next
// Open recovers them) and the pool.
func (s *Store) Close() error {
	for _, a := range s.adapters {
		a.Close()
	}
	s.pool.Close()
	return nil
}

func ensureSchema(ctx context.Context, pool *pgxpool.Pool, w purchase.World) error {
	return pgx.BeginFunc(ctx, pool, func(t pgx.Tx) error {
		for _, q := range []string{
			"SELECT pg_advisory_xact_lock(1685354545, 200)",
			`CREATE TABLE IF NOT EXISTS items (
				id        text PRIMARY KEY,
				stock     bigint NOT NULL CHECK (stock >= 0),
				available bigint NOT NULL CHECK (available >= 0),
				sold      bigint NOT NULL CHECK (sold >= 0),
				CHECK (available + sold = stock))`,
			`CREATE TABLE IF NOT EXISTS reservations (
				tx       text NOT NULL,
				line     integer NOT NULL CHECK (line >= 0),
				item_id  text NOT NULL REFERENCES items (id),
				quantity bigint NOT NULL CHECK (quantity > 0),
				PRIMARY KEY (tx, line),
				UNIQUE (tx, item_id))`,
			`CREATE TABLE IF NOT EXISTS accounts (
				id       text PRIMARY KEY,
				initial  bigint NOT NULL CHECK (initial >= 0),
				balance  bigint NOT NULL CHECK (balance >= 0),
				captured bigint NOT NULL CHECK (captured >= 0),
				CHECK (balance + captured = initial))`,
			`CREATE TABLE IF NOT EXISTS charges (
				tx      text PRIMARY KEY,
				user_id text NOT NULL REFERENCES accounts (id),
				amount  bigint NOT NULL CHECK (amount > 0),
				card    text NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS orders (
				tx      text PRIMARY KEY,
				user_id text NOT NULL,
				amount  bigint NOT NULL CHECK (amount > 0))`,
			`CREATE TABLE IF NOT EXISTS order_items (
				tx       text NOT NULL REFERENCES orders (tx),
				line     integer NOT NULL CHECK (line >= 0),
				item_id  text NOT NULL,
				quantity bigint NOT NULL CHECK (quantity > 0),
				price    bigint NOT NULL CHECK (price > 0),
				PRIMARY KEY (tx, line))`,
			`CREATE TABLE IF NOT EXISTS dtx_seeded (one boolean PRIMARY KEY CHECK (one))`,
		} {
			if _, err := t.Exec(ctx, q); err != nil {
				return fmt.Errorf("pgstore: schema: %w", err)
			}
		}
		// Seed once, marked by dtx_seeded; never touching rows that a
		// transaction still prepared may hold (recovery comes after).
		var seeded bool
		if err := t.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM dtx_seeded)").Scan(&seeded); err != nil || seeded {
			return err
		}
		for id, it := range w.Items {
			if _, err := t.Exec(ctx, "INSERT INTO items (id, stock, available, sold) VALUES ($1, $2, $2, 0)", id, it.Stock); err != nil {
				return fmt.Errorf("pgstore: seed item %s: %w", id, err)
			}
		}
		for id, a := range w.Accounts {
			if _, err := t.Exec(ctx, "INSERT INTO accounts (id, initial, balance, captured) VALUES ($1, $2, $2, 0)", id, int64(a.Balance)); err != nil {
				return fmt.Errorf("pgstore: seed account %s: %w", id, err)
			}
		}
		_, err := t.Exec(ctx, "INSERT INTO dtx_seeded VALUES (true)")
		return err
	})
}

func decode(op []byte) (purchase.Request, error) {
	var r purchase.Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// invWork is the inventory's branch: reserve every item (taken at once
// in the prepared transaction: available down, sold up), all or none.
type invWork struct{}

func (invWork) Keys(_ string, op []byte) ([]string, error) {
	r, err := decode(op)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(r.Items))
	for i, it := range r.Items {
		keys[i] = "item:" + it.ItemID
	}
	return keys, nil
}

func (invWork) Prepare(ctx context.Context, q pgpart.Querier, tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	for i, l := range r.Items { // in the order of the request: the first short item is named
		tag, err := q.Exec(ctx, "UPDATE items SET available = available - $2, sold = sold + $2 WHERE id = $1 AND available >= $2", l.ItemID, l.Quantity)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var avail int64
			if err := q.QueryRow(ctx, "SELECT available FROM items WHERE id = $1", l.ItemID).Scan(&avail); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("unknown item %s", l.ItemID)
				}
				return err
			}
			return fmt.Errorf("insufficient stock for %s: %d available, %d requested", l.ItemID, avail, l.Quantity)
		}
		if _, err := q.Exec(ctx, "INSERT INTO reservations (tx, line, item_id, quantity) VALUES ($1, $2, $3, $4)", tx, i, l.ItemID, l.Quantity); err != nil {
			return uniqueMeans(err, fmt.Sprintf("inventory: %s is already reserved", tx))
		}
	}
	return nil
}

// payWork is payment's branch: take the amount from the balance
// (captured at once in the prepared transaction).
type payWork struct{ year, month int }

func (payWork) Keys(_ string, op []byte) ([]string, error) {
	r, err := decode(op)
	if err != nil {
		return nil, err
	}
	return []string{"account:" + r.UserID}, nil
}

func (w payWork) Prepare(ctx context.Context, q pgpart.Querier, tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	switch {
	case r.Card.ExpYear < w.year || (r.Card.ExpYear == w.year && r.Card.ExpMonth < w.month):
		if err := q.QueryRow(ctx, "SELECT 1 FROM accounts WHERE id = $1", r.UserID).Scan(new(int)); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("unknown account %s", r.UserID)
		}
		return fmt.Errorf("card ending %s expired %02d/%02d", r.Card.Last4, r.Card.ExpMonth, r.Card.ExpYear%100)
	case r.Amount <= 0:
		return fmt.Errorf("invalid amount %s", r.Amount)
	}
	tag, err := q.Exec(ctx, "UPDATE accounts SET balance = balance - $2, captured = captured + $2 WHERE id = $1 AND balance >= $2", r.UserID, int64(r.Amount))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		var bal int64
		if err := q.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = $1", r.UserID).Scan(&bal); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("unknown account %s", r.UserID)
			}
			return err
		}
		return fmt.Errorf("insufficient funds for %s: balance %s, amount %s", r.UserID, money.Cents(bal), r.Amount)
	}
	_, err = q.Exec(ctx, "INSERT INTO charges (tx, user_id, amount, card) VALUES ($1, $2, $3, $4)", tx, r.UserID, int64(r.Amount), r.Card.Last4)
	return uniqueMeans(err, fmt.Sprintf("payment: %s is already charged", tx))
}

// orderWork is order's branch: record the order.
type orderWork struct{}

func (orderWork) Keys(tx string, op []byte) ([]string, error) {
	if _, err := decode(op); err != nil {
		return nil, err
	}
	return []string{"order:" + tx}, nil
}

func (orderWork) Prepare(ctx context.Context, q pgpart.Querier, tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	if r.TxID != tx {
		return fmt.Errorf("operation names transaction %s, not %s", r.TxID, tx)
	}
	if _, err := q.Exec(ctx, "INSERT INTO orders (tx, user_id, amount) VALUES ($1, $2, $3)", tx, r.UserID, int64(r.Amount)); err != nil {
		return uniqueMeans(err, fmt.Sprintf("order %s already exists", tx))
	}
	b := &pgx.Batch{}
	for i, l := range r.Items {
		b.Queue("INSERT INTO order_items (tx, line, item_id, quantity, price) VALUES ($1, $2, $3, $4, $5)", tx, i, l.ItemID, l.Quantity, int64(l.Price))
	}
	return q.SendBatch(ctx, b).Close()
}

// uniqueMeans turns a unique violation into the service's own reason.
func uniqueMeans(err error, reason string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return errors.New(reason)
	}
	return err
}
