package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
)

// Limits of one stream, client side.
const (
	// streamMaxBatch bounds the requests of one SubmitBatch.
	streamMaxBatch = 512
	// streamMaxPending bounds the requests waiting for an outcome on one
	// stream; past it Submit fails with RESOURCE_EXHAUSTED (and retries).
	streamMaxPending = 1 << 16
)

// ErrStreamBroken is wrapped by the error of every call that was in flight
// on a stream when it broke (connection lost, coordinator stopped): the
// transaction's outcome is unknown. The error carries the UNAVAILABLE
// status, so Submit retries it on a new stream, with the same transaction
// id; it reaches the caller only when RetryFor or the context runs out.
var ErrStreamBroken = errors.New("client: stream broken")

// brokenError is ErrStreamBroken with its cause; as a gRPC status it is
// UNAVAILABLE (retryable).
type brokenError struct{ cause error }

func (e *brokenError) Error() string {
	return fmt.Sprintf("%v (the outcome is unknown: submit again with the same transaction id): %v", ErrStreamBroken, e.cause)
}
func (e *brokenError) Is(target error) bool { return target == ErrStreamBroken }
func (e *brokenError) Unwrap() error        { return e.cause }
func (e *brokenError) GRPCStatus() *status.Status {
	switch c := status.Code(e.cause); c {
	case codes.PermissionDenied, codes.Unauthenticated:
		// Refused by authorization: nothing ran, and retrying will not
		// change who the caller is.
		return status.New(c, status.Convert(e.cause).Message())
	}
	return status.New(codes.Unavailable, e.Error())
}

// streamResult is what a waiting call gets.
type streamResult struct {
	out *dtxv1.TxOutcome
	err error
}

// stream is one SubmitStream call shared by many concurrent Submits. A
// sender goroutine sends every queued request as one SubmitBatch; a
// receiver goroutine hands each outcome to the call waiting for its seq.
// The first error breaks the stream for good: every call waiting on it
// fails with ErrStreamBroken, and the client opens a new stream.
type stream struct {
	c      *Client
	ep     *endpoint
	ss     grpc.BidiStreamingClient[dtxv1.SubmitBatch, dtxv1.OutcomeBatch]
	cancel context.CancelFunc
	wake   chan struct{} // cap 1: requests are queued
	done   chan struct{} // closed when broken

	mu      sync.Mutex
	err     error // why the stream broke; nil while it works
	seq     uint64
	pending map[uint64]waiter
	queue   []*dtxv1.StreamRequest
}

// waiter is a call waiting for the outcome of its seq, until its deadline
// (enforced by the stream's sweeper: no timer per call).
type waiter struct {
	ch       chan streamResult
	deadline time.Time
}

// sweepEvery is how often a stream fails the calls past their deadline.
const sweepEvery = 20 * time.Millisecond

// openStream starts a SubmitStream. Opening waits for the connection for
// as long as ctx allows; the stream itself lives until it breaks or the
// client is closed.
func (c *Client) openStream(ctx context.Context, ep *endpoint) (*stream, error) {
	sctx, cancel := context.WithCancel(c.ctx)
	stop := context.AfterFunc(ctx, cancel) // opening is bounded by ctx
	ss, err := ep.api.SubmitStream(sctx)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &stream{c: c, ep: ep, ss: ss, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{}),
		pending: map[uint64]waiter{}}
	c.streamsOpened.Add(1)
	go s.send()
	go s.recv()
	go s.sweep()
	return s, nil
}

// getStream returns a working stream of the pool, opening one in an empty
// or broken slot. Calls are spread over the slots round robin.
func (c *Client) getStream(ctx context.Context, ep *endpoint) (*stream, error) {
	i := int(ep.next.Add(1) % uint64(len(ep.slots)))
	sl := &ep.slots[i]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if s := sl.s; s != nil && s.broken() == nil {
		return s, nil
	}
	s, err := c.openStream(ctx, ep)
	if err != nil {
		return nil, err
	}
	sl.s = s
	return s, nil
}

func (s *stream) broken() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// submit sends one request on the stream and waits for its outcome, until
// deadline or the end of ctx.
func (s *stream) submit(ctx context.Context, r *dtxv1.PurchaseRequest, deadline time.Time) (*dtxv1.TxOutcome, error) {
	ch := make(chan streamResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	if len(s.pending) >= streamMaxPending {
		s.mu.Unlock()
		return nil, status.Errorf(codes.ResourceExhausted, "client: %d requests already waiting on one stream", streamMaxPending)
	}
	s.seq++
	seq := s.seq
	s.pending[seq] = waiter{ch: ch, deadline: deadline}
	s.queue = append(s.queue, &dtxv1.StreamRequest{Seq: seq, Purchase: r})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case res := <-ch:
		return res.out, res.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, seq) // its outcome, if it comes, is dropped
		s.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// sweep fails the calls whose deadline passed (DEADLINE_EXCEEDED: the
// caller may ask again), until the stream breaks.
func (s *stream) sweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.mu.Lock()
			for seq, w := range s.pending {
				if now.After(w.deadline) {
					w.ch <- streamResult{err: status.Error(codes.DeadlineExceeded, "client: no outcome within the call timeout (ask again with the same transaction id)")}
					delete(s.pending, seq)
				}
			}
			s.mu.Unlock()
		}
	}
}

// send sends the queued requests, up to streamMaxBatch a message.
func (s *stream) send() {
	var b dtxv1.SubmitBatch
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			s.mu.Lock()
			n := min(len(s.queue), streamMaxBatch)
			b.Requests = append(b.Requests[:0], s.queue[:n]...)
			if n == len(s.queue) {
				clear(s.queue)
				s.queue = s.queue[:0]
			} else {
				s.queue = s.queue[n:]
			}
			s.mu.Unlock()
			if n == 0 {
				break
			}
			if err := s.ss.Send(&b); err != nil {
				if !errors.Is(err, io.EOF) {
					s.fail(err)
				}
				return // the stream is over; recv learns why from Recv
			}
			clear(b.Requests)
		}
	}
}

// recv hands each outcome to its waiting call.
func (s *stream) recv() {
	for {
		b, err := s.ss.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		for _, o := range b.GetOutcomes() {
			w, ok := s.pending[o.GetSeq()]
			if !ok {
				continue // its caller gave up
			}
			delete(s.pending, o.GetSeq())
			if o.GetCode() != 0 {
				w.ch <- streamResult{err: status.Error(codes.Code(o.GetCode()), o.GetError())}
			} else {
				w.ch <- streamResult{out: o.GetOutcome()}
			}
		}
		s.mu.Unlock()
	}
}

// fail breaks the stream (once): every waiting call gets ErrStreamBroken.
func (s *stream) fail(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if status.Code(cause) == codes.Unimplemented {
		s.ep.noStream.Store(true) // an older coordinator: use unary calls
	}
	s.err = &brokenError{cause: cause}
	for seq, w := range s.pending {
		w.ch <- streamResult{err: s.err}
		delete(s.pending, seq)
	}
	s.queue = nil
	close(s.done)
	s.cancel()
}
