package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestServerSettingsAndRestart(t *testing.T) {
	s := Start(t)
	dsn := s.DSN("postgres")
	if got := query(t, dsn, "SHOW max_prepared_transactions"); got == "0" {
		t.Fatal("max_prepared_transactions is 0")
	}
	if got := query(t, dsn, "SHOW fsync"); got != "on" {
		t.Fatalf("fsync = %s", got)
	}
	if got := query(t, dsn, "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Fatalf("listen_addresses = %s", got)
	}
	// A prepared transaction survives an immediate stop.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE TABLE t (v int)", "BEGIN", "INSERT INTO t VALUES (1)", "PREPARE TRANSACTION 'pgtest-1'"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close(ctx)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, dsn, "SELECT count(*)::text FROM pg_prepared_xacts WHERE gid = 'pgtest-1'"); got != "1" {
		t.Fatalf("prepared transaction lost in a crash: count %s", got)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "COMMIT PREPARED 'pgtest-1'"); err != nil {
		t.Fatal(err)
	}
	if got := query(t, dsn, "SELECT count(*)::text FROM t"); got != "1" {
		t.Fatalf("rows after COMMIT PREPARED: %s", got)
	}
}

func TestNewDB(t *testing.T) {
	a, b := NewDB(t), NewDB(t)
	if a == b {
		t.Fatal("same database twice")
	}
	if got := query(t, b, "SELECT current_database()"); got == "" {
		t.Fatal("no database")
	}
}
