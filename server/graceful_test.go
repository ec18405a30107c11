package server_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// TestGracefulRestartUnderLoad drains and restarts the coordinator and then
// a service (SIGTERM's path: Shutdown) while purchases run. Clients retry
// with the same ids; every purchase gets exactly one outcome, and the state
// agrees with every outcome.
func TestGracefulRestartUnderLoad(t *testing.T) {
	c := newCluster(t)
	c.protocol.PrepareTimeout = time.Second
	c.start()
	cl := c.client()
	reqs := genRequests(t, c.world, 600, 5, "g-")

	var done atomic.Int64
	var mu sync.Mutex
	outcomes := map[string]twopc.Outcome{}
	jobs := make(chan *purchase.Request)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				o, err := cl.Submit(context.Background(), r)
				if err != nil {
					t.Errorf("%s: %v", r.TxID, err)
				} else if !o.Duplicate {
					mu.Lock()
					outcomes[r.TxID] = o
					mu.Unlock()
				}
				done.Add(1)
			}
		}()
	}
	go func() {
		for i := range reqs {
			jobs <- &reqs[i]
		}
		close(jobs)
	}()
	waitDone := func(n int64) {
		for done.Load() < n {
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitDone(120)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.coord.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.startCoordinator()
	t.Logf("coordinator drained and restarted at %d done", done.Load())
	waitDone(350)
	if err := c.parts["payment"].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.startService("payment")
	t.Logf("payment drained and restarted at %d done", done.Load())
	wg.Wait()
	cs := c.waitQuiet()
	checkOutcomes(t, cs, outcomes)
	t.Logf("%d client retries", cl.Retries())
}
