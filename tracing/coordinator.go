package tracing

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/dtx-dev/dtx/twopc"
)

// Span names. The tree of one committed transaction:
//
//	dtx.transaction                      coordinator: submit to END
//	  dtx.prepare                        PREPAREs sent to the decision
//	    dtx.prepare.branch  (per node)   PREPARE sent to its vote received
//	      dtx.participant.prepare        participant: PREPARE taken to YES/NO
//	        dtx.lock_wait                  waiting for the branch's locks
//	        dtx.check                      the business check (Resource)
//	        dtx.force                      PREPARED appended and synced
//	  dtx.decision                       last vote to COMMIT record durable
//	  dtx.commit                         COMMITs sent to the last ACK
//	    dtx.commit.branch   (per node)   COMMIT sent to its ACK received
//	      dtx.participant.commit         participant: COMMIT taken to ACK
//	        dtx.force                      COMMITTED appended and synced
//
// An aborted one ends at its ABORT record; a branch told ABORT has a
// dtx.participant.abort span under its dtx.prepare.branch.
const (
	SpanTransaction = "dtx.transaction"
	SpanPrepare     = "dtx.prepare"
	SpanPrepareBr   = "dtx.prepare.branch"
	SpanDecision    = "dtx.decision"
	SpanCommit      = "dtx.commit"
	SpanCommitBr    = "dtx.commit.branch"
	SpanPartPrepare = "dtx.participant.prepare"
	SpanPartCommit  = "dtx.participant.commit"
	SpanPartAbort   = "dtx.participant.abort"
	SpanLockWait    = "dtx.lock_wait"
	SpanCheck       = "dtx.check"
	SpanForce       = "dtx.force"
)

// Attribute keys.
const (
	AttrTx      = attribute.Key("dtx.tx")
	AttrNode    = attribute.Key("dtx.node")
	AttrAttempt = attribute.Key("dtx.attempt")
	AttrVote    = attribute.Key("dtx.vote")
	AttrReason  = attribute.Key("dtx.reason")
	AttrOutcome = attribute.Key("dtx.outcome")
	AttrRecord  = attribute.Key("dtx.record")
)

// MaxLive bounds the transactions (or branches) a tracer follows at once;
// past it new ones are not traced, so that a flood cannot grow its memory.
const MaxLive = 1 << 16

// Coordinator makes the coordinator's spans. It implements
// coordinator.Tracer; its methods run on the coordinator's loop goroutine.
type Coordinator struct {
	tr  trace.Tracer
	id  string
	txs map[string]*coordTx
	// aborted are transactions whose ABORT record was seen: their ABORT
	// messages, sent after it, still carry their branches' contexts.
	aborted []string
	now     func() time.Time
	sample  float64
	rng     *rand.Rand
}

// NewCoordinator returns the span maker of coordinator node id.
func NewCoordinator(p *Provider, id string) *Coordinator {
	return &Coordinator{tr: p.Tracer(), id: id, txs: make(map[string]*coordTx), now: time.Now,
		sample: p.sample, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

type coordTx struct {
	ctx      context.Context // the transaction span's
	span     trace.Span
	phase    trace.Span // dtx.prepare or dtx.commit
	phaseCtx context.Context
	commit   bool // the phase is dtx.commit
	nodes    []string
	branch   []trace.Span // per node: its dtx.prepare.branch or dtx.commit.branch
	tp       [][]byte     // per node: the branch span's traceparent
	attempt  uint32
	voted    int       // votes of the current attempt seen
	lastVote time.Time // when the vote that decided came (a NO, or the last one)
	done     bool      // ended (aborted; kept until its ABORTs are sent)
}

func (t *coordTx) index(node string) int { return slices.Index(t.nodes, node) }

// Begin starts the transaction span of tx, a child of ctx's span if ctx
// carries one (a caller's trace context). An unsampled transaction is not
// followed further.
func (c *Coordinator) Begin(ctx context.Context, tx string, branches []twopc.Branch) {
	if _, ok := c.txs[tx]; ok || len(c.txs) >= MaxLive {
		return
	}
	if p := trace.SpanContextFromContext(ctx); p.IsValid() {
		if !p.IsSampled() {
			return // the caller does not trace it
		}
	} else if c.sample < 1 && c.rng.Float64() >= c.sample {
		return
	}
	ctx, span := c.tr.Start(ctx, SpanTransaction, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(AttrTx.String(tx), AttrNode.String(c.id)))
	if !span.IsRecording() {
		span.End()
		return
	}
	t := &coordTx{ctx: ctx, span: span, attempt: 1,
		nodes: make([]string, len(branches)), branch: make([]trace.Span, len(branches)), tp: make([][]byte, len(branches))}
	for i, b := range branches {
		t.nodes[i] = b.Node
	}
	c.txs[tx] = t
}

// Send sees messages about to leave, after the records before them are
// durable: PREPARE and COMMIT start their branch's span (a resend is an
// event on it), and each carries its branch span's trace context.
func (c *Coordinator) Send(msgs []twopc.Message) {
	defer c.forgetAborted()
	for i := range msgs {
		m := &msgs[i]
		t := c.txs[m.Tx]
		if t == nil {
			continue
		}
		n := t.index(m.To)
		if t.done {
			if n >= 0 && m.Type == twopc.MsgAbort {
				m.Trace = t.tp[n]
			}
			continue
		}
		if n < 0 {
			continue
		}
		switch m.Type {
		case twopc.MsgPrepare:
			c.startBranch(t, n, false)
		case twopc.MsgCommit:
			if !t.commit {
				c.endBranches(t, "")
				if t.phase != nil {
					t.phase.End()
				}
				t.commit = true
				t.phaseCtx, t.phase = c.tr.Start(t.ctx, SpanCommit)
			}
			c.startBranch(t, n, true)
		case twopc.MsgAbort:
			if t.branch[n] != nil {
				t.branch[n].AddEvent("abort sent")
			}
		}
		m.Trace = t.tp[n]
	}
}

// startBranch starts node n's span of the current phase, or notes a
// resend on it.
func (c *Coordinator) startBranch(t *coordTx, n int, commit bool) {
	if s := t.branch[n]; s != nil {
		s.AddEvent("resent")
		return
	}
	if t.phase == nil {
		t.phaseCtx, t.phase = c.tr.Start(t.ctx, SpanPrepare, trace.WithAttributes(AttrAttempt.Int64(int64(t.attempt))))
	}
	name := SpanPrepareBr
	if commit {
		name = SpanCommitBr
	}
	_, s := c.tr.Start(t.phaseCtx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrNode.String(t.nodes[n]), AttrAttempt.Int64(int64(t.attempt))))
	t.branch[n] = s
	t.tp[n] = Encode(s.SpanContext())
}

// endBranches ends every open branch span (why, if set, is an event).
func (c *Coordinator) endBranches(t *coordTx, why string) {
	for i, s := range t.branch {
		if s != nil {
			if why != "" {
				s.AddEvent(why)
			}
			s.End()
			t.branch[i] = nil
		}
	}
}

// Step sees a participant's message before the machine takes it: a vote
// ends its branch's prepare span, an ACK its commit span.
func (c *Coordinator) Step(m twopc.Message) {
	t := c.txs[m.Tx]
	if t == nil || t.done || twopc.AttemptOf(m.Attempt) != t.attempt {
		return
	}
	n := t.index(m.From)
	if n < 0 || t.branch[n] == nil {
		return
	}
	s := t.branch[n]
	switch {
	case m.Type == twopc.MsgVote && !t.commit:
		s.SetAttributes(AttrVote.String(m.Vote.String()))
		if m.Reason != "" {
			s.SetAttributes(AttrReason.String(m.Reason))
		}
		t.voted++
		now := c.now()
		if m.Vote == twopc.VoteNo || t.voted == len(t.nodes) {
			t.lastVote = now // this vote decides
		}
		s.End(trace.WithTimestamp(now))
	case m.Type == twopc.MsgAck && t.commit:
		s.End()
	default:
		return
	}
	t.branch[n] = nil
}

// Record sees each record once appended (durable if forced): the decision
// ends the prepare phase (and is the dtx.decision span, from the last vote
// to the record durable), END and ABORT end the transaction, RESTART the
// attempt.
func (c *Coordinator) Record(r *twopc.Record) {
	t := c.txs[r.Tx]
	if t == nil || t.done {
		return
	}
	switch r.Type {
	case twopc.RecCommit:
		c.decided(t, "COMMIT")
	case twopc.RecEnd:
		c.finish(r.Tx, t, "committed", "")
	case twopc.RecAbort:
		c.decided(t, "ABORT")
		c.finish(r.Tx, t, "aborted", r.Reason)
		c.aborted = append(c.aborted, r.Tx)
	case twopc.RecRestart:
		t.span.AddEvent("attempt restarted", trace.WithAttributes(AttrAttempt.Int64(int64(t.attempt)), AttrReason.String(r.Reason)))
		c.endBranches(t, "attempt aborted")
		if t.phase != nil {
			t.phase.SetAttributes(AttrReason.String(r.Reason))
			t.phase.End()
			t.phase = nil
		}
		// The old attempt's ABORTs, sent next, keep its branches' contexts;
		// the new attempt's PREPAREs start new branch spans.
		t.attempt = twopc.AttemptOf(r.Attempt) + 1
		t.voted, t.lastVote = 0, time.Time{}
	}
}

// decided makes the dtx.decision span, when a vote decided (not a
// timeout or a deadlock victim's abort), and ends the prepare phase.
func (c *Coordinator) decided(t *coordTx, what string) {
	if t.commit {
		return
	}
	if !t.lastVote.IsZero() {
		_, s := startAt(c.tr, t.ctx, SpanDecision, t.lastVote, trace.WithAttributes(AttrOutcome.String(what)))
		s.End()
	}
	if t.phase != nil {
		t.phase.End()
		t.phase = nil
	}
}

func (c *Coordinator) finish(tx string, t *coordTx, outcome, reason string) {
	c.endBranches(t, "transaction "+outcome)
	if t.phase != nil {
		t.phase.End()
	}
	t.span.SetAttributes(AttrOutcome.String(outcome), AttrAttempt.Int64(int64(t.attempt)))
	if reason != "" {
		// A rollback is an outcome, not a failure of dtx: no error status.
		t.span.SetAttributes(AttrReason.String(reason))
	}
	t.span.End()
	t.done = true
	if outcome != "aborted" {
		delete(c.txs, tx)
	}
}

// forgetAborted drops the aborted transactions once their ABORTs left.
func (c *Coordinator) forgetAborted() {
	for _, tx := range c.aborted {
		if t := c.txs[tx]; t != nil && t.done {
			delete(c.txs, tx)
		}
	}
	c.aborted = c.aborted[:0]
}

// Outcome notes the moment the caller was answered.
func (c *Coordinator) Outcome(o *twopc.Outcome) {
	if t := c.txs[o.Tx]; t != nil && !t.done {
		t.span.AddEvent("outcome reported", trace.WithAttributes(attribute.Bool("dtx.committed", o.Committed), attribute.Bool("dtx.duplicate", o.Duplicate)))
	}
}

// Live returns how many transactions are followed (tests).
func (c *Coordinator) Live() int { return len(c.txs) }
