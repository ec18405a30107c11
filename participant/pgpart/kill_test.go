package pgpart

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/pgtest"
)

// The SIGKILL harness: a child process (this test binary) runs the
// coordinator, the bank on PostgreSQL and the ledger under load, with
// the bank crashing now and then (SDK faults); the parent injects a fault
// — PostgreSQL crashes and restarts, or its connections are killed —
// then kills the child with SIGKILL at a random moment, recovers the same
// data directory and database in a new cluster, and checks atomicity, that
// nothing is left prepared and that money is conserved.
//
// DTX_PG_TRIALS sets the number of trials (default 2, 1 with -short) and
// DTX_PG_TRIAL_BUDGET the time they may take in all (default 5m): the
// loop stops at whichever comes first.

const childEnv = "DTX_PGPART_CHILD"

// childMain runs the load until killed.
func childMain() int {
	seed, _ := strconv.ParseUint(os.Getenv("DTX_PGPART_SEED"), 10, 64)
	n, _ := strconv.Atoi(os.Getenv("DTX_PGPART_N"))
	c, err := startCluster(os.Getenv("DTX_PGPART_DIR"), os.Getenv("DTX_PGPART_DSN"), clusterOpts{crashRate: 0.03, seed: seed})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // bounded even if nobody kills it
	defer cancel()
	c.load(ctx, seed, n, 8)
	fmt.Println("loaded")
	<-ctx.Done()
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestKillHarness(t *testing.T) {
	trials := envInt("DTX_PG_TRIALS", 2)
	if testing.Short() {
		trials = 1
	}
	budget := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("DTX_PG_TRIAL_BUDGET")); err == nil {
		budget = d
	}
	seed := testSeed(t)
	t.Logf("%d trials", trials)
	srv := pgtest.Start(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	deadline := time.Now().Add(budget)
	kinds := []string{"sigkill", "server-crash+sigkill", "lost-connections+sigkill"}
	count := map[string]int{}
	var committed, total int
	done, withPrepared := 0, 0
	for trial := 0; trial < trials && time.Now().Before(deadline); trial++ {
		tseed := rng.Uint64()
		kind := kinds[rng.IntN(len(kinds))]
		n := 60 + rng.IntN(60)
		db := fmt.Sprintf("trial%d", trial)
		if err := pgtest.CreateDB(srv.DSN("postgres"), db); err != nil {
			t.Fatal(err)
		}
		dsn := srv.DSN(db)
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "DTX_PGPART_DIR="+dir, "DTX_PGPART_DSN="+dsn,
			"DTX_PGPART_SEED="+strconv.FormatUint(tseed, 10), "DTX_PGPART_N="+strconv.Itoa(n))
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			cancel()
			t.Fatalf("trial %d (seed %d): child did not start: %q", trial, tseed, sc.Text())
		}
		go func() {
			for sc.Scan() {
			}
		}()
		time.Sleep(time.Duration(20+rng.IntN(400)) * time.Millisecond)
		switch kind {
		case "server-crash+sigkill":
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		case "lost-connections+sigkill":
			if err := terminateBackends(ctx, dsn); err != nil {
				t.Logf("terminate: %v", err)
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		outstanding := preparedCount(ctx, dsn)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if outstanding > 0 {
			withPrepared++
		}
		cancel()
		c, err := startCluster(dir, dsn, clusterOpts{seed: tseed})
		if err != nil {
			t.Fatalf("trial %d (%s, seed %d): recovery: %v", trial, kind, tseed, err)
		}
		got, err := c.settle(tseed, n, dsn)
		c.Close()
		if err != nil {
			t.Fatalf("trial %d (%s, seed %d): %v", trial, kind, tseed, err)
		}
		count[kind]++
		committed += got
		total += n
		done++
	}
	t.Logf("%d trials, 0 violations: %v; %d with prepared transactions outstanding at the kill; %d of %d transactions committed",
		done, count, withPrepared, committed, total)
}

func terminateBackends(ctx context.Context, dsn string) error {
	a, err := pgxConnect(ctx, dsn)
	if err != nil {
		return err
	}
	defer a.Close(ctx)
	_, err = a.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
	return err
}

// preparedCount counts the prepared transactions in dsn's database (-1 on
// error: the server may be restarting).
func preparedCount(ctx context.Context, dsn string) int {
	c, err := pgxConnect(ctx, dsn)
	if err != nil {
		return -1
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").Scan(&n); err != nil {
		return -1
	}
	return n
}

// testSeed returns $DTX_PG_SEED, or a new seed; it is logged (and the
// tests print it again in their failure messages).
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("DTX_PG_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (replay with DTX_PG_SEED=%d)", seed, seed)
	return seed
}
