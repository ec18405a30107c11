package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
)

// State is the three services' committed state, read from the rows in one
// snapshot, in the services' own JSON forms (what `dtx state` prints).
type State struct {
	Inventory inventory.State
	Payment   payment.State
	Order     order.State
}

// Flush waits until the decisions handed to the adapters so far are
// applied in the rows (pgpart.Adapter.Flush).
func (s *Store) Flush(ctx context.Context) error {
	for _, a := range s.adapters {
		if err := a.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// State reads the committed state, once the decisions handed over so far
// are applied.
func (s *Store) State(ctx context.Context) (State, error) {
	if err := s.Flush(ctx); err != nil {
		return State{}, err
	}
	st := State{
		Inventory: inventory.State{Items: map[string]inventory.Item{}, Reservations: map[string]inventory.Reservation{}},
		Payment:   payment.State{Accounts: map[string]payment.Account{}, Charges: map[string]payment.Charge{}},
		Order:     order.State{Orders: map[string]order.Order{}},
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(t pgx.Tx) error {
		var id, tx, user, card string
		var a, b, c, d int64
		rows, _ := t.Query(ctx, "SELECT id, stock, available, sold FROM items")
		if _, err := pgx.ForEachRow(rows, []any{&id, &a, &b, &c}, func() error {
			st.Inventory.Items[id] = inventory.Item{Stock: a, Available: b, Sold: c}
			return nil
		}); err != nil {
			return err
		}
		rows, _ = t.Query(ctx, "SELECT tx, item_id, quantity FROM reservations ORDER BY tx, line")
		if _, err := pgx.ForEachRow(rows, []any{&tx, &id, &a}, func() error {
			r := st.Inventory.Reservations[tx]
			r.Items = append(r.Items, inventory.ReservedItem{ItemID: id, Quantity: a})
			st.Inventory.Reservations[tx] = r
			return nil
		}); err != nil {
			return err
		}
		for tx, r := range st.Inventory.Reservations {
			if len(r.Items) == 1 {
				r.ItemID, r.Quantity = r.Items[0].ItemID, r.Items[0].Quantity
				st.Inventory.Reservations[tx] = r
			}
		}
		rows, _ = t.Query(ctx, "SELECT id, initial, balance, captured FROM accounts")
		if _, err := pgx.ForEachRow(rows, []any{&id, &a, &b, &c}, func() error {
			st.Payment.Accounts[id] = payment.Account{Initial: money.Cents(a), Balance: money.Cents(b), Captured: money.Cents(c)}
			return nil
		}); err != nil {
			return err
		}
		rows, _ = t.Query(ctx, "SELECT tx, user_id, amount, card FROM charges")
		if _, err := pgx.ForEachRow(rows, []any{&tx, &user, &a, &card}, func() error {
			st.Payment.Charges[tx] = payment.Charge{UserID: user, Amount: money.Cents(a), Card: card}
			return nil
		}); err != nil {
			return err
		}
		rows, _ = t.Query(ctx, "SELECT tx, user_id, amount FROM orders")
		if _, err := pgx.ForEachRow(rows, []any{&tx, &user, &a}, func() error {
			st.Order.Orders[tx] = order.Order{UserID: user, Amount: money.Cents(a)}
			return nil
		}); err != nil {
			return err
		}
		rows, _ = t.Query(ctx, "SELECT tx, item_id, quantity, price FROM order_items ORDER BY tx, line")
		if _, err := pgx.ForEachRow(rows, []any{&tx, &id, &c, &d}, func() error {
			o, ok := st.Order.Orders[tx]
			if !ok {
				return fmt.Errorf("pgstore: order item of unknown order %s", tx)
			}
			o.Items = append(o.Items, purchase.LineItem{ItemID: id, Quantity: c, Price: money.Cents(d)})
			st.Order.Orders[tx] = o
			return nil
		}); err != nil {
			return err
		}
		for tx, o := range st.Order.Orders {
			if len(o.Items) == 1 {
				o.ItemID, o.Quantity = o.Items[0].ItemID, o.Items[0].Quantity
				st.Order.Orders[tx] = o
			}
		}
		return nil
	})
	return st, err
}

// Check verifies what the CHECK constraints cannot: per item, sold is the
// sum of the committed reservations; per account, captured is the sum of
// the committed charges; every order's amount is the sum of its items.
func (s *Store) Check(ctx context.Context) error {
	if err := s.Flush(ctx); err != nil {
		return err
	}
	var errs []error
	for _, c := range []struct{ what, q string }{
		{"item whose sold differs from its reservations", `SELECT i.id FROM items i LEFT JOIN
			(SELECT item_id, sum(quantity) AS q FROM reservations GROUP BY item_id) r ON r.item_id = i.id
			WHERE i.sold <> coalesce(r.q, 0) LIMIT 1`},
		{"account whose captured differs from its charges", `SELECT a.id FROM accounts a LEFT JOIN
			(SELECT user_id, sum(amount) AS s FROM charges GROUP BY user_id) c ON c.user_id = a.id
			WHERE a.captured <> coalesce(c.s, 0) LIMIT 1`},
		{"order whose amount differs from its items", `SELECT o.tx FROM orders o LEFT JOIN
			(SELECT tx, sum(quantity * price) AS s FROM order_items GROUP BY tx) i ON i.tx = o.tx
			WHERE o.amount <> coalesce(i.s, 0) LIMIT 1`},
	} {
		var id string
		err := s.pool.QueryRow(ctx, c.q).Scan(&id)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			errs = append(errs, fmt.Errorf("pgstore: %s: %s", c.what, id))
		}
	}
	return errors.Join(errs...)
}
