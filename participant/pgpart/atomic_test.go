package pgpart

import (
	"context"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/pgtest"
)

// Atomicity across PostgreSQL and another participant while the bank's
// participant crashes and restarts (SDK faults), its connections are
// killed (pg_terminate_backend), and then the whole process stops
// uncleanly (coordinator included) and recovers.
func TestAtomicityUnderFaults(t *testing.T) {
	seed := testSeed(t)
	dsn := pgtest.NewDB(t)
	dir := t.TempDir()
	c, err := startCluster(dir, dsn, clusterOpts{crashRate: 0.05, seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	n := 150
	if testing.Short() {
		n = 60
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); c.load(ctx, seed, n, 8) }()
	// Lost connections while the load runs.
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.adapter.Pool().Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"); err != nil {
			t.Logf("terminate: %v", err)
		}
	}
	<-done
	// Stop without draining (what a SIGKILL leaves is tested by the
	// process harness); recover in a new "process" on the same directory.
	c.Close()
	c, err = startCluster(dir, dsn, clusterOpts{seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	committed, err := c.settle(seed, n, dsn)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if committed == 0 || committed == n {
		t.Fatalf("seed %d: %d of %d committed: the run tested nothing", seed, committed, n)
	}
	t.Logf("%d of %d committed; adapter %+v", committed, n, c.adapter.Stats())
}

// PostgreSQL crashes (immediate stop) in the middle of the load, and comes
// back: branches prepared at the time survive in the server and are
// committed or rolled back as the coordinator decided.
func TestAtomicityServerCrash(t *testing.T) {
	seed := testSeed(t)
	srv := pgtest.Start(t)
	if err := pgtest.CreateDB(srv.DSN("postgres"), "bank"); err != nil {
		t.Fatal(err)
	}
	dsn := srv.DSN("bank")
	c, err := startCluster(t.TempDir(), dsn, clusterOpts{seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 100
	if testing.Short() {
		n = 40
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); c.load(ctx, seed, n, 8) }()
	time.Sleep(150 * time.Millisecond)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	<-done
	committed, err := c.settle(seed, n, dsn)
	if err != nil {
		t.Fatalf("seed %d: %v\nserver log:\n%s", seed, err, srv.Log())
	}
	t.Logf("%d of %d committed; adapter %+v", committed, n, c.adapter.Stats())
}
