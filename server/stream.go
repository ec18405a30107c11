package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/coordinator"
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

	inflight atomic.Int64    // requests read whose outcome is not sent yet
	trace    context.Context // for tracing (nil when off)

	mu  sync.Mutex
	out []*dtxv1.StreamOutcome
}

// SubmitStream serves the streaming client API (see dtx.proto).
func (a *coordAPI) SubmitStream(ss dtxv1.Coordinator_SubmitStreamServer) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	s := &submitStream{c: a.c, ss: ss, slot: make(chan struct{}, streamInflight), wake: make(chan struct{}, 1)}
	if a.c.tracing != nil {
		s.trace = a.c.grpcTraceParent(ctx) // the stream's trace context: every transaction's parent
	}
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
		case <-s.c.coord.Done():
			return status.Error(codes.Unavailable, "coordinator stopped; retry with the same transaction_id")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// read reads the stream until it ends, submitting the requests of each
// SubmitBatch together (one hop into the coordinator's loop for all).
func (s *submitStream) read(ctx context.Context) error {
	var (
		props []coordinator.Proposal
		seqs  []uint64
	)
	for {
		b, err := s.ss.Recv()
		if err != nil {
			return err
		}
		props, seqs = props[:0], seqs[:0]
		for _, r := range b.GetRequests() {
			select {
			case s.slot <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			s.inflight.Add(1)
			tx, branches, err := s.check(r.GetPurchase())
			if err != nil {
				s.push(errorOutcome(r.GetSeq(), err))
				continue
			}
			props = append(props, coordinator.Proposal{Tx: tx, Branches: branches, Ctx: s.trace})
			seqs = append(seqs, r.GetSeq())
		}
		if len(props) > 0 {
			s.submit(props, seqs)
		}
	}
}

// check checks one request and makes its branches; the error is a status.
func (s *submitStream) check(p *dtxv1.PurchaseRequest) (string, []twopc.Branch, error) {
	if size := len(p.GetJsonLine()) + len(p.GetOp()); size > s.c.base.cfg.MaxRequestBytes {
		return "", nil, status.Errorf(codes.InvalidArgument, "request of %d bytes is over the limit of %d", size, s.c.base.cfg.MaxRequestBytes)
	}
	return s.c.purchaseRequest(p)
}

// submit submits checked requests; each outcome is queued for sending as
// soon as it is durable.
func (s *submitStream) submit(props []coordinator.Proposal, seqs []uint64) {
	c := s.c
	n := 0
	for i := range props {
		if !c.enter() { // draining: refuse the rest
			for j := i; j < len(props); j++ {
				s.push(errorOutcome(seqs[j], grpcError(errDraining)))
			}
			break
		}
		n++
	}
	props = slices.Clone(props[:n])
	seqs = slices.Clone(seqs[:n])
	start := time.Now()
	c.coord.SubmitAsync(props, func(i int, o twopc.Outcome, err error) {
		tx := props[i].Tx
		if err != nil {
			c.log.Warn("submit failed", "tx", tx, "err", err)
		} else {
			c.metrics.submit.Observe(time.Since(start).Seconds())
			if o.Duplicate {
				c.metrics.dups.Inc()
			}
		}
		s.push(streamOutcome(seqs[i], tx, o, err))
		c.leave()
	})
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
