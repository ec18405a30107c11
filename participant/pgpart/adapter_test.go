package pgpart

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/pgtest"
	"github.com/dtx-dev/dtx/twopc"
)

func res(t testing.TB, a *Adapter) twopc.AttemptResource {
	t.Helper()
	r, err := a.NewResource()
	if err != nil {
		t.Fatal(err)
	}
	return r.(twopc.AttemptResource)
}

func recoverRes(t testing.TB, r twopc.AttemptResource) {
	t.Helper()
	if err := r.(interface{ Recover() error }).Recover(); err != nil {
		t.Fatal(err)
	}
}

func gid(t testing.TB, a *Adapter, tx string, att uint32) string {
	g, err := a.GID(tx, att)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestPrepareCommitAbort(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := openBank(t, dsn, nil)
	r := res(t, a)
	recoverRes(t, r)
	weird := "it's a ' quote; DROP TABLE orders; -- ünï"
	for i, tx := range []string{"t1", "t2", weird} {
		if err := r.PrepareAttempt(tx, 1, []byte(fmt.Sprintf("a%d:100", i))); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{gid(t, a, "t1", 1), gid(t, a, "t2", 1), gid(t, a, weird, 1)}
	slices.Sort(want)
	if got := prepared(t, a); !slices.Equal(got, want) {
		t.Fatalf("prepared %v, want %v", got, want)
	}
	r.CommitAttempt("t1", 1, nil)
	r.CommitAttempt(weird, 1, nil)
	r.AbortAttempt("t2", 1, nil)
	flush(t, a)
	// Duplicates are "already done".
	r.CommitAttempt("t1", 1, nil)
	r.AbortAttempt("t2", 1, nil)
	flush(t, a)
	// Business NO, malformed op, bad id: nothing prepared.
	if err := r.PrepareAttempt("t3", 1, []byte("a3:999999999")); err == nil || !strings.Contains(err.Error(), "insufficient funds") {
		t.Fatalf("overdraft: %v", err)
	}
	if err := r.PrepareAttempt("t4", 1, []byte("nope")); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed: %v", err)
	}
	if err := r.PrepareAttempt(strings.Repeat("x", 129), 1, []byte("a3:1")); err == nil || !strings.Contains(err.Error(), "longer than 128") {
		t.Fatalf("long id: %v", err)
	}
	if got := prepared(t, a); len(got) != 0 {
		t.Fatalf("left prepared: %v", got)
	}
	orders, err := bankCheck(context.Background(), dsn, a.Owner())
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != 2 || !orders["t1"] || !orders[weird] {
		t.Fatalf("orders %v", orders)
	}
	st := a.Stats()
	if st.AlreadyDone != 2 || st.Heuristic != 0 || st.Committed != 2 || st.Aborted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A restart of the participant: the log says t1 is in doubt, t2
// committed, t3 aborted; t4 was prepared in PostgreSQL but its PREPARED
// record never made it to the log (a crash before the sync). Recovery
// commits t2, rolls back t3 and the orphan t4, and leaves t1 to the
// machine's inquiry.
func TestRecoverFromLog(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := openBank(t, dsn, nil)
	r := res(t, a)
	recoverRes(t, r)
	for i, tx := range []string{"t1", "t2", "t3", "t4"} {
		if err := r.PrepareAttempt(tx, 1, []byte(fmt.Sprintf("a%d:10", i))); err != nil {
			t.Fatal(err)
		}
	}
	// New life: replay.
	r2 := res(t, a)
	for i, tx := range []string{"t1", "t2", "t3"} {
		if err := r2.PrepareAttempt(tx, 1, []byte(fmt.Sprintf("a%d:10", i))); err != nil {
			t.Fatal(err)
		}
	}
	r2.CommitAttempt("t2", 1, nil)
	r2.AbortAttempt("t3", 1, nil)
	if got := prepared(t, a); len(got) != 4 {
		t.Fatalf("replay touched the database: %v", got)
	}
	recoverRes(t, r2)
	if got := prepared(t, a); !slices.Equal(got, []string{gid(t, a, "t1", 1)}) {
		t.Fatalf("after recovery: %v", got)
	}
	r2.CommitAttempt("t1", 1, nil)
	flush(t, a)
	orders, err := bankCheck(context.Background(), dsn, a.Owner())
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != 2 || !orders["t1"] || !orders["t2"] {
		t.Fatalf("orders %v", orders)
	}
	if st := a.Stats(); st.OrphansRolledBack != 1 || st.Heuristic != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// PostgreSQL crashes (immediate stop) between PREPARE TRANSACTION and
// COMMIT PREPARED: the prepared transaction survives; the COMMIT whose
// statement fails is left to the sweep, which commits it once the server
// is back. An ABORT likewise.
func TestServerCrashBetweenPrepareAndCommit(t *testing.T) {
	srv := pgtest.Start(t)
	if err := pgtest.CreateDB(srv.DSN("postgres"), "bank"); err != nil {
		t.Fatal(err)
	}
	dsn := srv.DSN("bank")
	a := openBank(t, dsn, nil)
	r := res(t, a)
	recoverRes(t, r)
	for i, tx := range []string{"c1", "c2", "r1"} {
		if err := r.PrepareAttempt(tx, 1, []byte(fmt.Sprintf("a%d:7", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	r.CommitAttempt("c1", 1, nil) // fails: server down
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	r.CommitAttempt("c2", 1, nil) // the pool's old connection is dead: may fail too
	r.AbortAttempt("r1", 1, nil)
	flush(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		if _, err := a.Sweep(ctx); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	orders, err := bankCheck(ctx, dsn, a.Owner())
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != 2 || !orders["c1"] || !orders["c2"] {
		t.Fatalf("orders %v (stats %+v)", orders, a.Stats())
	}
	if st := a.Stats(); st.Retried == 0 || st.Heuristic != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A decision applied by hand the other way is reported, not retried.
func TestHeuristicOutcomeIsReported(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := openBank(t, dsn, nil)
	r := res(t, a)
	recoverRes(t, r)
	if err := r.PrepareAttempt("h1", 1, []byte("a0:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Pool().Exec(context.Background(), "ROLLBACK PREPARED '"+gid(t, a, "h1", 1)+"'"); err != nil {
		t.Fatal(err)
	}
	r.CommitAttempt("h1", 1, nil)
	flush(t, a)
	if st := a.Stats(); st.Heuristic != 1 || st.Retried != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// One process per owner: a second adapter for the same participant on
// the same database is refused; another participant is not.
func TestOwnerLock(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := openBank(t, dsn, nil)
	ctx := context.Background()
	_, err := Open(ctx, Config{DSN: dsn, Participant: "bank", Work: bank{}, OwnerWait: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second owner: %v", err)
	}
	b, err := Open(ctx, Config{DSN: dsn, Participant: "bank2", Work: bank{}})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	a.Close()
	c, err := Open(ctx, Config{DSN: dsn, Participant: "bank", Work: bank{}, OwnerWait: 5 * time.Second})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	c.Close()
	if _, err := Open(ctx, Config{DSN: dsn, Participant: "bad name", Work: bank{}}); err == nil || !strings.Contains(err.Error(), "bad participant name") {
		t.Fatalf("bad name: %v", err)
	}
}

// Sweeps running back to back while branches prepare and commit on
// another goroutine never roll back a live branch: every COMMIT finds its
// gid prepared (none is "already done"), no orphan is counted.
func TestSweepNeverTouchesLiveBranches(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := openBank(t, dsn, nil)
	r := res(t, a)
	recoverRes(t, r)
	n := 150
	if testing.Short() {
		n = 60
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sweeps int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := a.Sweep(ctx); err == nil {
				sweeps++
			}
		}
	}()
	for i := range n {
		tx := fmt.Sprintf("s%d", i)
		if err := r.PrepareAttempt(tx, 1, []byte(fmt.Sprintf("a%d:1", i%bankAccounts))); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			r.AbortAttempt(tx, 1, nil)
		} else {
			r.CommitAttempt(tx, 1, nil)
		}
	}
	flush(t, a)
	cancel()
	wg.Wait()
	st := a.Stats()
	if st.OrphansRolledBack != 0 || st.AlreadyDone != 0 || st.Heuristic != 0 || st.Retried != 0 {
		t.Fatalf("a sweep touched a live branch: %+v", st)
	}
	orders, err := bankCheck(context.Background(), dsn, a.Owner())
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != n-(n+2)/3 {
		t.Fatalf("%d orders, want %d", len(orders), n-(n+2)/3)
	}
	t.Logf("%d branches, %d sweeps meanwhile", n, sweeps)
}

func flush(t testing.TB, a *Adapter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
