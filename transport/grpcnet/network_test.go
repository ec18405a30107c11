package grpcnet

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/twopc"
)

// serve starts a gRPC server for n on a free port of 127.0.0.1.
func serve(t *testing.T, n *Network) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(n.ServerOptions()...)
	n.RegisterService(s)
	go s.Serve(lis)
	return lis.Addr().String(), s.Stop
}

func newNet(t *testing.T, peers map[string]string) *Network {
	t.Helper()
	return newNetStreams(t, peers, DefaultConfig().Streams)
}

func newNetStreams(t *testing.T, peers map[string]string, streams int) *Network {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Streams = streams
	cfg.Peers = peers
	cfg.CallTimeout = 10 * time.Second // generous: a loaded machine under -race
	cfg.BackoffBase, cfg.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func recv(t *testing.T, ch chan []twopc.Message, want int) []twopc.Message {
	t.Helper()
	var got []twopc.Message
	deadline := time.After(10 * time.Second)
	for len(got) < want {
		select {
		case b := <-ch:
			got = append(got, b...)
		case <-deadline:
			t.Fatalf("got %d of %d messages", len(got), want)
		}
	}
	return got
}

func TestDeliverAndBatch(t *testing.T) {
	for _, streams := range []int{1, 4} {
		t.Run(fmt.Sprint("streams=", streams), func(t *testing.T) { testDeliverAndBatch(t, streams) })
	}
}

func testDeliverAndBatch(t *testing.T, streams int) {
	server := newNet(t, nil)
	addr, stop := serve(t, server)
	defer stop()
	inbox := make(chan []twopc.Message, 1024)
	server.Register("inventory", inbox)

	client := newNetStreams(t, map[string]string{"inventory": addr}, streams)
	const n = 5000
	for i := range n {
		client.Send([]twopc.Message{{Type: twopc.MsgPrepare, From: "coordinator", To: "inventory", Tx: fmt.Sprint("t", i), Epoch: 1, Op: []byte{1, 2}}})
	}
	got := recv(t, inbox, n)
	seen := map[string]bool{}
	for i, m := range got {
		if streams == 1 && m.Tx != fmt.Sprint("t", i) { // one call at a time: FIFO
			t.Fatalf("message %d out of order: %v", i, m)
		}
		if m.Type != twopc.MsgPrepare || string(m.Op) != "\x01\x02" || seen[m.Tx] {
			t.Fatalf("message %d: %v", i, m)
		}
		seen[m.Tx] = true
	}
	// The sender counts a call once it returns, which may be just after
	// the receiver delivered it: wait for the counters to settle.
	st := client.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.Sent != n && time.Now().Before(deadline); st = client.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("stats %+v, %.1f messages per call", st, st.MessagesPerCall())
	if st.Calls >= n || st.Sent != n || st.Dropped != 0 {
		t.Fatalf("no batching or losses: %+v", st)
	}
}

func TestPeerDownThenUp(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nobody listens yet

	client := newNet(t, map[string]string{"payment": addr})
	msg := func(tx string) []twopc.Message {
		return []twopc.Message{{Type: twopc.MsgCommit, From: "coordinator", To: "payment", Tx: tx, Epoch: 1}}
	}
	client.Send(msg("lost"))
	time.Sleep(100 * time.Millisecond)
	if st := client.Stats(); st.CallErrors == 0 {
		t.Fatalf("a call to a dead peer did not fail: %+v", st)
	}

	server := newNet(t, nil)
	inbox := make(chan []twopc.Message, 16)
	server.Register("payment", inbox)
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	s := grpc.NewServer(server.ServerOptions()...)
	server.RegisterService(s)
	go s.Serve(lis)
	defer s.Stop()
	// Resend until it arrives, as the protocol would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		client.Send(msg("t1"))
		select {
		case b := <-inbox:
			if b[0].Tx != "t1" {
				t.Fatalf("got %v", b)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never delivered after the peer came up: %+v", client.Stats())
		}
	}
}

func TestRefusals(t *testing.T) {
	server := newNet(t, nil)
	addr, stop := serve(t, server)
	defer stop()
	client := newNet(t, map[string]string{"order": addr})

	// Not registered: refused and counted at the receiver; the stream
	// goes on (the sender, streaming, does not hear of it).
	client.Send([]twopc.Message{{Type: twopc.MsgAbort, From: "coordinator", To: "order", Tx: "t1"}})
	waitFor(t, func() bool { return server.Stats().Refused == 1 })

	// Filtered: PREPARE refused, ABORT delivered.
	inbox := make(chan []twopc.Message, 16)
	server.Register("order", inbox)
	server.SetFilter(func(m *twopc.Message) bool { return m.Type != twopc.MsgPrepare })
	client.Send([]twopc.Message{
		{Type: twopc.MsgPrepare, From: "coordinator", To: "order", Tx: "t2"},
		{Type: twopc.MsgAbort, From: "coordinator", To: "order", Tx: "t3"},
	})
	got := recv(t, inbox, 1)
	if len(got) != 1 || got[0].Tx != "t3" {
		t.Fatalf("filter: got %v", got)
	}

	// Unknown destination: dropped at the sender.
	client.Send([]twopc.Message{{Type: twopc.MsgAbort, From: "coordinator", To: "nobody", Tx: "t4"}})
	if client.Stats().Dropped == 0 {
		t.Fatal("message to an unknown node not counted as dropped")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unaryOnly is a peer of an older release: Deliver, no DeliverStream.
type unaryOnly struct {
	dtxv1.UnimplementedTransportServer
	n *Network
}

func (u unaryOnly) Deliver(ctx context.Context, b *dtxv1.Batch) (*dtxv1.DeliverReply, error) {
	return u.n.Deliver(ctx, b)
}

// TestStreamFallsBackToUnary: a sender whose peer has no DeliverStream
// goes on with one Deliver call per batch, and messages arrive.
func TestStreamFallsBackToUnary(t *testing.T) {
	server := newNet(t, nil)
	inbox := make(chan []twopc.Message, 64)
	server.Register("order", inbox)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(server.ServerOptions()...)
	dtxv1.RegisterTransportServer(s, unaryOnly{n: server})
	go s.Serve(lis)
	defer s.Stop()
	client := newNet(t, map[string]string{"order": lis.Addr().String()})
	// The first batch may go down with the stream that finds DeliverStream
	// missing; resend, as the protocol does, until batches arrive.
	deadline := time.Now().Add(10 * time.Second)
	got := 0
	for i := 0; got < 3; i++ {
		client.Send([]twopc.Message{{Type: twopc.MsgAbort, From: "coordinator", To: "order", Tx: fmt.Sprintf("t%d", i)}})
		select {
		case <-inbox:
			got++
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d batches arrived through the unary fallback: %+v", got, client.Stats())
		}
	}
}

// TestStreamManyBatches: batches sent back to back on one stream all
// arrive, in order.
func TestStreamManyBatches(t *testing.T) {
	server := newNet(t, nil)
	inbox := make(chan []twopc.Message, 4096)
	server.Register("order", inbox)
	addr, stop := serve(t, server)
	defer stop()
	client := newNet(t, map[string]string{"order": addr})
	const n = 2000
	for i := range n {
		client.Send([]twopc.Message{{Type: twopc.MsgAbort, From: "coordinator", To: "order", Tx: fmt.Sprintf("t%d", i)}})
	}
	next := 0
	deadline := time.After(10 * time.Second)
	for next < n {
		select {
		case b := <-inbox:
			for _, m := range b {
				if want := fmt.Sprintf("t%d", next); m.Tx != want {
					t.Fatalf("got %s, want %s: out of order or lost", m.Tx, want)
				}
				next++
			}
		case <-deadline:
			t.Fatalf("%d of %d messages arrived: %+v", next, n, client.Stats())
		}
	}
}
