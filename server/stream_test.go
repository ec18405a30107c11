package server_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// rawStream opens a SubmitStream on the cluster's coordinator, without the
// client library.
func rawStream(t *testing.T, c *cluster) dtxv1.Coordinator_SubmitStreamClient {
	t.Helper()
	conn, err := grpc.NewClient(c.grpc[twopc.CoordinatorID], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	ss, err := dtxv1.NewCoordinatorClient(conn).SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// recvN reads outcomes until it has n, by seq.
func recvN(t *testing.T, ss dtxv1.Coordinator_SubmitStreamClient, n int) map[uint64]*dtxv1.StreamOutcome {
	t.Helper()
	got := map[uint64]*dtxv1.StreamOutcome{}
	for len(got) < n {
		b, err := ss.Recv()
		if err != nil {
			t.Fatalf("after %d of %d outcomes: %v", len(got), n, err)
		}
		for _, o := range b.GetOutcomes() {
			if _, dup := got[o.GetSeq()]; dup {
				t.Fatalf("two outcomes for seq %d", o.GetSeq())
			}
			got[o.GetSeq()] = o
		}
	}
	return got
}

func opOf(t *testing.T, r *purchase.Request) []byte {
	t.Helper()
	op, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// TestStreamManyInOneBatch sends 300 purchases in one SubmitBatch on one
// raw stream: each seq gets exactly one outcome, for its own transaction.
func TestStreamManyInOneBatch(t *testing.T) {
	c := newCluster(t)
	c.start()
	reqs := genRequests(t, c.world, 300, 11, "sb-")
	ss := rawStream(t, c)
	var b dtxv1.SubmitBatch
	for i := range reqs {
		b.Requests = append(b.Requests, &dtxv1.StreamRequest{Seq: uint64(1000 + i), Purchase: &dtxv1.PurchaseRequest{Op: opOf(t, &reqs[i])}})
	}
	if err := ss.Send(&b); err != nil {
		t.Fatal(err)
	}
	got := recvN(t, ss, len(reqs))
	outcomes := map[string]twopc.Outcome{}
	for i := range reqs {
		o := got[uint64(1000+i)]
		if o == nil {
			t.Fatalf("no outcome for seq %d", 1000+i)
		}
		if o.GetCode() != 0 {
			t.Fatalf("seq %d (%s): error %d %s", 1000+i, reqs[i].TxID, o.GetCode(), o.GetError())
		}
		if o.GetOutcome().GetTransactionId() != reqs[i].TxID {
			t.Fatalf("seq %d: outcome of %s, want %s", 1000+i, o.GetOutcome().GetTransactionId(), reqs[i].TxID)
		}
		outcomes[reqs[i].TxID] = twopc.Outcome{Tx: reqs[i].TxID, Committed: o.GetOutcome().GetStatus() == dtxv1.Status_STATUS_COMMITTED, Reason: o.GetOutcome().GetReason()}
	}
	// Closing our side ends the stream cleanly once everything is answered.
	if err := ss.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Recv(); err == nil || err.Error() != "EOF" {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	checkOutcomes(t, c.waitQuiet(), outcomes)
}

// TestStreamClientConcurrent: 400 concurrent Submits share one stream and
// each gets the outcome of its own transaction.
func TestStreamClientConcurrent(t *testing.T) {
	c := newCluster(t)
	c.start()
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], Streams: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reqs := genRequests(t, c.world, 400, 12, "sc-")
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]twopc.Outcome{}
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := cl.Submit(context.Background(), &reqs[i])
			if err != nil {
				t.Errorf("%s: %v", reqs[i].TxID, err)
				return
			}
			if o.Tx != reqs[i].TxID {
				t.Errorf("Submit(%s) got the outcome of %s", reqs[i].TxID, o.Tx)
			}
			mu.Lock()
			outcomes[o.Tx] = o
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := cl.StreamsOpened(); n != 1 {
		t.Errorf("%d streams opened, want 1", n)
	}
	checkOutcomes(t, c.waitQuiet(), outcomes)
}

// TestStreamBadRequests: malformed requests get an INVALID_ARGUMENT outcome
// naming what is wrong, and the stream goes on serving the good ones
// around them and after them.
func TestStreamBadRequests(t *testing.T) {
	c := newCluster(t)
	c.start()
	good := genRequests(t, c.world, 3, 13, "bad-")
	ss := rawStream(t, c)
	bad := map[uint64]struct {
		p    *dtxv1.PurchaseRequest
		want string
	}{
		2: {&dtxv1.PurchaseRequest{}, "empty request"},
		3: {&dtxv1.PurchaseRequest{JsonLine: `{"transaction_id":"x1","user_id":`}, "invalid JSON"},
		4: {&dtxv1.PurchaseRequest{JsonLine: "{}", Op: []byte{1}}, "not both"},
		5: {&dtxv1.PurchaseRequest{Op: []byte{0xff, 0x01}}, "op"},
		6: {&dtxv1.PurchaseRequest{JsonLine: strings.Repeat(" ", 70<<10)}, "over the limit"},
	}
	b := &dtxv1.SubmitBatch{Requests: []*dtxv1.StreamRequest{{Seq: 1, Purchase: &dtxv1.PurchaseRequest{Op: opOf(t, &good[0])}}}}
	for seq := uint64(2); seq <= 6; seq++ {
		b.Requests = append(b.Requests, &dtxv1.StreamRequest{Seq: seq, Purchase: bad[seq].p})
	}
	b.Requests = append(b.Requests, &dtxv1.StreamRequest{Seq: 7, Purchase: &dtxv1.PurchaseRequest{Op: opOf(t, &good[1])}})
	if err := ss.Send(b); err != nil {
		t.Fatal(err)
	}
	got := recvN(t, ss, 7)
	for seq, w := range bad {
		o := got[seq]
		if codes.Code(o.GetCode()) != codes.InvalidArgument || !strings.Contains(o.GetError(), w.want) {
			t.Errorf("seq %d: code %v error %q, want INVALID_ARGUMENT containing %q", seq, codes.Code(o.GetCode()), o.GetError(), w.want)
		}
	}
	for _, seq := range []uint64{1, 7} {
		if o := got[seq]; o.GetCode() != 0 || o.GetOutcome().GetStatus() != dtxv1.Status_STATUS_COMMITTED {
			t.Errorf("seq %d: %v", seq, o)
		}
	}
	// Still serving after the bad ones.
	if err := ss.Send(&dtxv1.SubmitBatch{Requests: []*dtxv1.StreamRequest{{Seq: 8, Purchase: &dtxv1.PurchaseRequest{Op: opOf(t, &good[2])}}}}); err != nil {
		t.Fatal(err)
	}
	if o := recvN(t, ss, 1)[8]; o.GetCode() != 0 || o.GetOutcome().GetTransactionId() != good[2].TxID {
		t.Fatalf("seq 8 after the bad requests: %v", o)
	}

	// Through the client: a bad line is rejected (not retried) and the next
	// call on the same stream works.
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], Streams: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.SubmitLine(context.Background(), `{"transaction_id":"x2"`); !errors.Is(err, client.ErrRejected) {
		t.Fatalf("bad line: %v, want ErrRejected", err)
	}
	more := genRequests(t, c.world, 1, 14, "bad2-")
	if o, err := cl.Submit(context.Background(), &more[0]); err != nil || !o.Committed {
		t.Fatalf("after the bad line: %v %v", o, err)
	}
	if n, r := cl.StreamsOpened(), cl.Retries(); n != 1 || r != 0 {
		t.Fatalf("%d streams opened and %d retries, want 1 and 0", n, r)
	}
}

// TestStreamDuplicate: a transaction id submitted again gets its first
// outcome, marked duplicate — on the same stream, on another stream, and
// twice in one batch.
func TestStreamDuplicate(t *testing.T) {
	c := newCluster(t)
	c.start()
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], Streams: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	// A purchase that rolls back, so that the reason must come back too.
	r := purchase.Request{TxID: "dup-1", UserID: "user-1", ItemID: "no-such-item", Quantity: 1,
		Price: money.Cents(100), Amount: money.Cents(100), Card: purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2099}}
	first, err := cl.Submit(ctx, &r)
	if err != nil || first.Committed || first.Duplicate || first.Reason == "" {
		t.Fatalf("first: %+v %v, want a rollback with a reason", first, err)
	}
	for i := range 3 { // round robin: both streams
		again, err := cl.Submit(ctx, &r)
		if err != nil || !again.Duplicate || again.Committed != first.Committed || again.Reason != first.Reason {
			t.Fatalf("again %d: %+v %v, want %+v as duplicate", i, again, err, first)
		}
	}
	ss := rawStream(t, c)
	ok := genRequests(t, c.world, 1, 15, "dup2-")
	op := opOf(t, &ok[0])
	if err := ss.Send(&dtxv1.SubmitBatch{Requests: []*dtxv1.StreamRequest{
		{Seq: 1, Purchase: &dtxv1.PurchaseRequest{Op: op}}, {Seq: 2, Purchase: &dtxv1.PurchaseRequest{Op: op}},
	}}); err != nil {
		t.Fatal(err)
	}
	got := recvN(t, ss, 2)
	a, b := got[1].GetOutcome(), got[2].GetOutcome()
	if a.GetStatus() != dtxv1.Status_STATUS_COMMITTED || b.GetStatus() != a.GetStatus() || a.GetDuplicate() == b.GetDuplicate() {
		t.Fatalf("same id twice in a batch: %v and %v, want one committed and one duplicate of it", a, b)
	}
}
