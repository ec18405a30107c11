package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdleConnectionFlood opens 400 idle TCP connections to the order
// service's gRPC port while it runs under a limit of 256 file descriptors,
// and keeps them open during a load. The listener holds at most a quarter
// of the limit at once and closes a connection that has not finished its
// handshake within --handshake-timeout, so the flood cannot take the
// descriptors the service needs: the established connection from the
// coordinator keeps working, purchases keep committing, and every flood
// connection is closed by the server.
func TestIdleConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dtx and runs four processes")
	}
	bin := buildDtx(t)
	c := newClCluster(t, bin, 50, 500, 400)
	c.nofile = map[string]int{"order": 256}
	c.flags = map[string][]string{"order": {"--handshake-timeout", "1s"}}
	c.startAll()
	cl := c.client()
	reqs := clRequests(t, bin, c.world, 400, 17, "flood-")
	load := newClLoad()
	load.run(cl, reqs[:20], 4) // the coordinator's connection to order is up

	var conns []net.Conn
	for range 400 {
		conn, err := net.DialTimeout("tcp", c.lis["order"], 2*time.Second)
		if err != nil {
			t.Logf("dial %d: %v", len(conns), err)
			continue
		}
		conns = append(conns, conn)
	}
	t.Logf("%d idle connections open to order", len(conns))
	start := time.Now()
	// Every flood connection is closed by the server (the accepted ones at
	// once after the handshake timeout, the queued ones as they come up).
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(45 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		}()
	}
	load.run(cl, reqs[20:], 16)
	t.Logf("load during the flood done in %v", time.Since(start).Round(time.Millisecond))
	cs := c.settle(60 * time.Second)
	committed := load.check(t, cl, cs)
	notVoted := 0
	for _, o := range load.outcomes {
		if strings.Contains(o.Reason, "did not vote") || strings.Contains(o.Reason, "timeout") {
			notVoted++
		}
	}
	if notVoted > 0 || committed < 380 {
		t.Errorf("during the flood: %d of %d committed, %d rolled back because order did not vote in time\n%s",
			committed, len(reqs), notVoted, c.logTail("order"))
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d of %d idle connections were still open after 45s", open, len(conns))
	}
}
