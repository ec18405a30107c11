package pgpart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dtx-dev/dtx/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	code := m.Run()
	pgtest.Shutdown()
	os.Exit(code)
}

// bank is the tests' Work: an operation "account:amount" debits amount
// (minor units) from the account and records an order row. A balance
// never goes negative (CHECK): insufficient funds is a business NO.
type bank struct{}

const bankAccounts = 4
const bankBalance = 1_000_000

func bankSchema(ctx context.Context, pool *pgxpool.Pool) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS accounts (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))`,
		`CREATE TABLE IF NOT EXISTS orders (tx text PRIMARY KEY, account text NOT NULL, amount bigint NOT NULL CHECK (amount > 0))`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return err
		}
	}
	// Seed once. Not with ON CONFLICT DO NOTHING on every start: that
	// waits for the row locks of transactions still prepared, which only
	// the recovery that follows resolves.
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&n); err != nil || n > 0 {
		return err
	}
	for i := range bankAccounts {
		if _, err := pool.Exec(ctx, "INSERT INTO accounts (id, balance) VALUES ($1, $2)", fmt.Sprintf("a%d", i), bankBalance); err != nil {
			return err
		}
	}
	return nil
}

func parseOp(op []byte) (string, int64, error) {
	acct, amt, ok := strings.Cut(string(op), ":")
	n, err := strconv.ParseInt(amt, 10, 64)
	if !ok || acct == "" || err != nil || n <= 0 {
		return "", 0, fmt.Errorf("malformed operation %q", op)
	}
	return acct, n, nil
}

func (bank) Keys(_ string, op []byte) ([]string, error) {
	acct, _, err := parseOp(op)
	if err != nil {
		return nil, err
	}
	return []string{"account:" + acct}, nil
}

func (bank) Prepare(ctx context.Context, q Querier, tx string, op []byte) error {
	acct, amt, err := parseOp(op)
	if err != nil {
		return err
	}
	var bal int64
	if err := q.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE", acct).Scan(&bal); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("no account %s", acct)
		}
		return err
	}
	if bal < amt {
		return fmt.Errorf("insufficient funds in %s: %d < %d", acct, bal, amt)
	}
	if _, err := q.Exec(ctx, "UPDATE accounts SET balance = balance - $2 WHERE id = $1", acct, amt); err != nil {
		return err
	}
	_, err = q.Exec(ctx, "INSERT INTO orders (tx, account, amount) VALUES ($1, $2, $3)", tx, acct, amt)
	return err
}

// bankCheck verifies the database side: balances plus ordered amounts add
// up to the initial total, and no prepared transaction of the owner is
// left. It returns the committed order ids.
func bankCheck(ctx context.Context, dsn, owner string) (map[string]bool, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var left []string
	rows, _ := conn.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)", gidPrefix(owner))
	if left, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, err
	}
	if len(left) > 0 {
		return nil, fmt.Errorf("prepared transactions left behind: %v", left)
	}
	var bal, ordered int64
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(balance),0)::bigint FROM accounts").Scan(&bal); err != nil {
		return nil, err
	}
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(amount),0)::bigint FROM orders").Scan(&ordered); err != nil {
		return nil, err
	}
	if bal+ordered != bankAccounts*bankBalance {
		return nil, fmt.Errorf("money not conserved: balances %d + orders %d != %d", bal, ordered, bankAccounts*bankBalance)
	}
	rows, _ = conn.Query(ctx, "SELECT tx FROM orders")
	txs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, tx := range txs {
		out[tx] = true
	}
	var branches int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM dtx_branches WHERE owner = $1", owner).Scan(&branches); err != nil {
		return nil, err
	}
	if branches != len(out) {
		return nil, fmt.Errorf("%d committed branches in dtx_branches but %d orders", branches, len(out))
	}
	return out, nil
}

func openBank(t testing.TB, dsn string, mod func(*Config)) *Adapter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{DSN: dsn, Participant: "bank", Work: bank{}, SweepEvery: time.Hour, LockTimeout: 500 * time.Millisecond, StatementTimeout: 5 * time.Second, OwnerWait: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	a, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := bankSchema(ctx, a.Pool()); err != nil {
		t.Fatal(err)
	}
	return a
}

func prepared(t testing.TB, a *Adapter) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, _ := a.Pool().Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid")
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return gids
}

func pgxConnect(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }
