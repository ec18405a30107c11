package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

// fakeCoord is a coordinator that answers every purchase COMMITTED (marked
// duplicate when it saw the id before), or, with hold, never answers.
type fakeCoord struct {
	dtxv1.UnimplementedCoordinatorServer
	hold     bool
	noStream bool // answer SubmitStream UNIMPLEMENTED (an older coordinator)
	received atomic.Int64
	unary    atomic.Int64

	mu   sync.Mutex
	seen map[string]bool
}

func (f *fakeCoord) outcome(p *dtxv1.PurchaseRequest) *dtxv1.TxOutcome {
	var r purchase.Request
	if err := r.UnmarshalBinary(p.GetOp()); err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dup := f.seen[r.TxID]
	f.seen[r.TxID] = true
	return &dtxv1.TxOutcome{TransactionId: r.TxID, Status: dtxv1.Status_STATUS_COMMITTED, Duplicate: dup}
}

func (f *fakeCoord) Submit(_ context.Context, p *dtxv1.PurchaseRequest) (*dtxv1.TxOutcome, error) {
	f.unary.Add(1)
	return f.outcome(p), nil
}

func (f *fakeCoord) SubmitStream(ss dtxv1.Coordinator_SubmitStreamServer) error {
	if f.noStream {
		return status.Error(codes.Unimplemented, "method SubmitStream not implemented")
	}
	for {
		b, err := ss.Recv()
		if err != nil {
			return err
		}
		var out dtxv1.OutcomeBatch
		for _, r := range b.GetRequests() {
			f.received.Add(1)
			if !f.hold {
				out.Outcomes = append(out.Outcomes, &dtxv1.StreamOutcome{Seq: r.GetSeq(), Outcome: f.outcome(r.GetPurchase())})
			}
		}
		if len(out.Outcomes) > 0 {
			if err := ss.Send(&out); err != nil {
				return err
			}
		}
	}
}

// serveFake serves f on addr ("127.0.0.1:0" for a new port).
func serveFake(t *testing.T, addr string, f *fakeCoord) (*grpc.Server, string) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the old listener's port may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.seen = map[string]bool{}
	s := grpc.NewServer()
	dtxv1.RegisterCoordinatorServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return s, lis.Addr().String()
}

func req(tx string) *purchase.Request {
	return &purchase.Request{TxID: tx, UserID: "u1", ItemID: "i1", Quantity: 1, Price: money.Cents(100),
		Amount: money.Cents(100), Card: purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2099}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStreamBreakAndReconnect: calls in flight on a stream when the
// coordinator goes away fail with ErrStreamBroken, a retryable
// (UNAVAILABLE) error; Submit retries them on a new stream once the
// coordinator is back, and the duplicate mark of an id this client itself
// may have submitted before is dropped.
func TestStreamBreakAndReconnect(t *testing.T) {
	held := &fakeCoord{hold: true}
	srv, addr := serveFake(t, "127.0.0.1:0", held)
	cl, err := Dial(Config{Addr: addr, Streams: 1, RetryFor: 20 * time.Second, BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([]bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := cl.Submit(context.Background(), req("t"+string(rune('a'+i))))
			errs[i], outs[i] = err, o.Duplicate
		}()
	}
	// One more call straight on the stream, to see the error itself.
	s, err := cl.getStream(context.Background(), cl.endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	direct := make(chan error, 1)
	go func() {
		_, err := s.submit(context.Background(), &dtxv1.PurchaseRequest{Op: mustOp(t, req("direct"))}, time.Now().Add(time.Minute))
		direct <- err
	}()
	waitFor(t, "all requests at the coordinator", func() bool { return held.received.Load() == n+1 })
	srv.Stop() // the connection breaks with every request in flight

	select {
	case err := <-direct:
		if !errors.Is(err, ErrStreamBroken) || status.Code(err) != codes.Unavailable {
			t.Fatalf("in-flight call on a broken stream: %v (code %v), want ErrStreamBroken, UNAVAILABLE", err, status.Code(err))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight call did not fail when the stream broke")
	}

	serveFake(t, addr, &fakeCoord{}) // back, and answering
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		}
		if outs[i] {
			t.Errorf("call %d: marked duplicate although only its own earlier attempt may have reached the coordinator", i)
		}
	}
	if got := cl.StreamsOpened(); got < 2 {
		t.Errorf("%d streams opened, want a new one after the break", got)
	}
	if cl.Retries() < n {
		t.Errorf("%d retries, want at least %d", cl.Retries(), n)
	}
}

// TestStreamFallbackToUnary: against a coordinator without SubmitStream,
// Submit falls back to unary calls.
func TestStreamFallbackToUnary(t *testing.T) {
	f := &fakeCoord{noStream: true}
	_, addr := serveFake(t, "127.0.0.1:0", f)
	cl, err := Dial(Config{Addr: addr, RetryFor: 10 * time.Second, BackoffBase: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 3 {
		o, err := cl.Submit(context.Background(), req("u"+string(rune('a'+i))))
		if err != nil || !o.Committed || o.Duplicate {
			t.Fatalf("call %d: %+v %v", i, o, err)
		}
	}
	if f.unary.Load() != 3 {
		t.Fatalf("%d unary calls, want 3", f.unary.Load())
	}
}

// TestStreamCallerGivesUp: a call whose context ends gets DEADLINE_EXCEEDED
// (retryable), and a late outcome for it is dropped without harm.
func TestStreamCallerGivesUp(t *testing.T) {
	f := &fakeCoord{hold: true}
	_, addr := serveFake(t, "127.0.0.1:0", f)
	cl, err := Dial(Config{Addr: addr, Streams: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s, err := cl.getStream(context.Background(), cl.endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	// By the call's deadline (the stream's sweeper) and by its context.
	if _, err := s.submit(context.Background(), &dtxv1.PurchaseRequest{Op: mustOp(t, req("late1"))}, time.Now().Add(50*time.Millisecond)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.submit(ctx, &dtxv1.PurchaseRequest{Op: mustOp(t, req("late2"))}, time.Now().Add(time.Hour)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
	}
	s.mu.Lock()
	left := len(s.pending)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls still pending after the caller gave up", left)
	}
}

func mustOp(t *testing.T, r *purchase.Request) []byte {
	t.Helper()
	op, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// tpCoord records the traceparent metadata of each unary Submit.
type tpCoord struct {
	fakeCoord
	mu sync.Mutex
	tp []string
}

func (f *tpCoord) Submit(ctx context.Context, p *dtxv1.PurchaseRequest) (*dtxv1.TxOutcome, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.tp = append(f.tp, strings.Join(md.Get("traceparent"), ","))
	f.mu.Unlock()
	return f.fakeCoord.Submit(ctx, p)
}

// TestSubmitCarriesCallersTrace: a Submit whose context carries the
// caller's span sends its W3C traceparent (on a call of its own, not on
// the shared stream); one without a span sends none and uses the stream.
func TestSubmitCarriesCallersTrace(t *testing.T) {
	f := &tpCoord{}
	f.seen = map[string]bool{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	dtxv1.RegisterCoordinatorServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	c, err := Dial(Config{Addr: lis.Addr().String(), Streams: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := c.Submit(ctx, req("traced")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(context.Background(), req("plain")); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if len(f.tp) != 1 || f.tp[0] != want {
		t.Fatalf("unary calls' traceparent %q, want exactly one: %q", f.tp, want)
	}
	if got := f.received.Load(); got != 1 {
		t.Fatalf("%d purchases on the stream, want the untraced one", got)
	}
}

// follower refuses every call as a follower of a replicated coordinator
// does, naming the leader.
type follower struct {
	dtxv1.UnimplementedCoordinatorServer
	leader string
	calls  atomic.Int64
}

func (f *follower) refuse() error {
	f.calls.Add(1)
	return status.Errorf(codes.Unavailable, "coordinator replica 1 is not the leader; retry with the same transaction_id at the leader at %s", f.leader)
}

func (f *follower) Submit(context.Context, *dtxv1.PurchaseRequest) (*dtxv1.TxOutcome, error) {
	return nil, f.refuse()
}

func (f *follower) SubmitStream(dtxv1.Coordinator_SubmitStreamServer) error { return f.refuse() }

// A client given one replica's address follows the leader that replica
// names, though it was not given that address: it dials it and stays
// there.
func TestFollowsALeaderNotGiven(t *testing.T) {
	lead := &fakeCoord{seen: map[string]bool{}}
	_, leadAddr := serveFake(t, "127.0.0.1:0", lead)
	fol := &follower{leader: leadAddr}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dtxv1.RegisterCoordinatorServer(srv, fol)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cl, err := Dial(Config{Addr: lis.Addr().String(), RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 5 {
		o, err := cl.Submit(context.Background(), req("lead-"+string(rune('a'+i))))
		if err != nil || !o.Committed {
			t.Fatalf("submit %d through a follower: %+v, %v", i, o, err)
		}
	}
	if n := fol.calls.Load(); n != 1 {
		t.Fatalf("the follower was called %d times, want once (then the client stays with the leader)", n)
	}
	if eps := cl.endpoints(); len(eps) != 2 || eps[1].addr != leadAddr {
		t.Fatalf("endpoints after the redirect: %d", len(eps))
	}
}
