package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/twopc"
)

// Limits of one SubmitStream.
const (
	// streamInflight bounds the requests of one stream that have no outcome
	// sent yet; past it the server stops reading the stream, and gRPC's
	// flow control holds the client back.
	streamInflight = 4096
	// streamMaxOutcomes bounds the outcomes of one OutcomeBatch.
	streamMaxOutcomes = 1024
)

// submitStream is one SubmitStream call being served: a reader goroutine
// submits each request to the coordinator (each in its own goroutine, as a
// unary call would be), and the handler's goroutine sends the outcomes
// back, every outcome ready at the moment of sending in one OutcomeBatch.
type submitStream struct {
	c    *Coordinator
	ss   dtxv1.Coordinator_SubmitStreamServer
	slot chan struct{} // one token per request in flight (cap streamInflight)
	wake chan struct{} // cap 1: outcomes are queued

	inflight atomic.Int64 // requests read whose outcome is not sent yet

	mu  sync.Mutex
	out []*dtxv1.StreamOutcome
}

// SubmitStream serves the streaming client API (see dtx.proto).
func (a *coordAPI) SubmitStream(ss dtxv1.Coordinator_SubmitStreamServer) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	s := &submitStream{c: a.c, ss: ss, slot: make(chan struct{}, streamInflight), wake: make(chan struct{}, 1)}
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.read(ctx) }()
	drain := a.c.drain
	reading, draining := true, false
	var batch dtxv1.OutcomeBatch
	var queued []*dtxv1.StreamOutcome
	for {
		queued = s.take(queued[:0])
		for len(queued) > 0 {
			n := min(len(queued), streamMaxOutcomes)
			batch.Outcomes = queued[:n]
			err := ss.Send(&batch)
			batch.Outcomes = nil
			if err != nil {
				return err
			}
			s.inflight.Add(-int64(n))
			for range n {
				<-s.slot
			}
			clear(queued[:n])
			queued = queued[n:]
		}
		if (!reading || draining) && s.inflight.Load() == 0 {
			if draining {
				return status.Error(codes.Unavailable, errDraining.Error())
			}
			return nil // the client closed its side and has every outcome
		}
		select {
		case <-s.wake:
		case err := <-recvDone:
			reading = false
			if !errors.Is(err, io.EOF) {
				if _, ok := status.FromError(err); !ok {
					err = status.FromContextError(err).Err()
				}
				return err
			}
		case <-drain:
			draining, drain = true, nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// read reads the stream until it ends, submitting every request.
func (s *submitStream) read(ctx context.Context) error {
	for {
		b, err := s.ss.Recv()
		if err != nil {
			return err
		}
		for _, r := range b.GetRequests() {
			select {
			case s.slot <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			s.inflight.Add(1)
			s.submit(ctx, r)
		}
	}
}

// submit answers one request: at once if it is malformed, else when its
// outcome is durable.
func (s *submitStream) submit(ctx context.Context, r *dtxv1.StreamRequest) {
	seq := r.GetSeq()
	p := r.GetPurchase()
	if size := len(p.GetJsonLine()) + len(p.GetOp()); size > s.c.base.cfg.MaxRequestBytes {
		s.push(&dtxv1.StreamOutcome{Seq: seq, Code: uint32(codes.InvalidArgument),
			Error: status.Errorf(codes.InvalidArgument, "request of %d bytes is over the limit of %d", size, s.c.base.cfg.MaxRequestBytes).Error()})
		return
	}
	tx, branches, err := s.c.purchaseRequest(p)
	if err != nil {
		s.push(errorOutcome(seq, err))
		return
	}
	go func() {
		o, err := s.c.submit(ctx, tx, branches)
		s.push(streamOutcome(seq, tx, o, err))
	}()
}

func streamOutcome(seq uint64, tx string, o twopc.Outcome, err error) *dtxv1.StreamOutcome {
	if err != nil {
		return errorOutcome(seq, grpcError(err))
	}
	st, reason := statusOf(o)
	return &dtxv1.StreamOutcome{Seq: seq, Outcome: &dtxv1.TxOutcome{TransactionId: tx, Status: st, Reason: reason, Duplicate: o.Duplicate}}
}

// errorOutcome carries a status error (from grpcError or purchaseRequest).
func errorOutcome(seq uint64, err error) *dtxv1.StreamOutcome {
	st := status.Convert(err)
	return &dtxv1.StreamOutcome{Seq: seq, Code: uint32(st.Code()), Error: st.Message()}
}

func (s *submitStream) push(o *dtxv1.StreamOutcome) {
	s.mu.Lock()
	s.out = append(s.out, o)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take moves the queued outcomes to buf (swapping slices, so that pushes
// go on while the caller sends).
func (s *submitStream) take(buf []*dtxv1.StreamOutcome) []*dtxv1.StreamOutcome {
	s.mu.Lock()
	out := s.out
	s.out = buf
	s.mu.Unlock()
	return out
}
