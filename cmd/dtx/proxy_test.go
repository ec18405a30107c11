package main

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/twopc"
)

// faultProxy is a TCP proxy on 127.0.0.1 that can delay, drop or cut the
// traffic it carries.
type faultProxy struct {
	lis    net.Listener
	target string

	mu    sync.Mutex
	mode  string // "ok", "delay", "drop", "cut"
	delay time.Duration
	conns map[net.Conn]struct{}
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{lis: lis, target: target, mode: "ok", conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { lis.Close(); p.set("cut", 0) })
	return p
}

func (p *faultProxy) addr() string { return p.lis.Addr().String() }

// set changes the fault; "cut" also closes every open connection, and
// leaving "drop" closes them too (their streams lost bytes).
func (p *faultProxy) set(mode string, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if mode == "cut" || p.mode == "drop" {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
	p.mode, p.delay = mode, delay
}

func (p *faultProxy) state() (string, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

func (p *faultProxy) accept() {
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		if mode, _ := p.state(); mode == "cut" {
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pump(in, out)
		go p.pump(out, in)
	}
}

func (p *faultProxy) pump(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			switch mode, d := p.state(); mode {
			case "delay":
				time.Sleep(d)
			case "drop":
				continue // the bytes vanish
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or a closed connection
			return
		}
	}
}

// TestClusterNetworkFaults puts a proxy between the coordinator and the
// payment service, both ways, that delays, drops and cuts the connection
// while purchases run; after it heals, nothing stays in doubt and every
// invariant holds.
func TestClusterNetworkFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dtx and runs four processes")
	}
	bin := buildDtx(t)
	n := 1500
	c := newClCluster(t, bin, 50, 500, n)
	toPayment := newFaultProxy(t, c.grpc["payment"])
	toCoord := newFaultProxy(t, c.grpc[twopc.CoordinatorID])
	c.peers[twopc.CoordinatorID]["payment"] = toPayment.addr()
	c.peers["payment"][twopc.CoordinatorID] = toCoord.addr()
	c.startAll()
	cl := c.client()
	reqs := clRequests(t, bin, c.world, n, 12, "f-")

	load := newClLoad()
	loadDone := make(chan struct{})
	start := time.Now()
	go func() { load.run(cl, reqs, 32); close(loadDone) }()
	schedule := []struct {
		mode  string
		delay time.Duration
	}{{"ok", 0}, {"delay", 20 * time.Millisecond}, {"drop", 0}, {"ok", 0}, {"cut", 0}, {"ok", 0}, {"delay", 300 * time.Millisecond}, {"drop", 0}, {"cut", 0}}
	step := 0
loop:
	for {
		select {
		case <-loadDone:
			break loop
		case <-time.After(700 * time.Millisecond):
		}
		f := schedule[step%len(schedule)]
		step++
		toPayment.set(f.mode, f.delay)
		toCoord.set(f.mode, f.delay)
		t.Logf("%v: %s %v (%d done)", time.Since(start).Round(time.Millisecond), f.mode, f.delay, load.done.Load())
		if time.Since(start) > 60*time.Second {
			t.Fatalf("load did not finish in 60s")
		}
	}
	toPayment.set("ok", 0)
	toCoord.set("ok", 0)
	t.Logf("%d purchases in %v; healed", len(reqs), time.Since(start).Round(time.Millisecond))
	cs := c.settle(60 * time.Second)
	committed := load.check(t, cl, cs)
	t.Logf("%d committed, %d rolled back, %d without an outcome at the client; %d client retries", committed, len(load.outcomes)-committed, len(load.unknown), cl.Retries())
	if committed == 0 {
		t.Error("nothing committed")
	}
}
