package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/dtx-dev/dtx/twopc"
)

// Participant makes a participant's spans. It implements
// participant.Tracer; its methods run on the service's loop goroutine.
// A participant never starts a trace of its own: it traces the branches
// whose PREPARE (or COMMIT, ABORT) carried a sampled trace context.
type Participant struct {
	tr  trace.Tracer
	id  string
	brs map[string]*branchTrace
	now func() time.Time
	// ended are branches whose last record was seen: their NO vote or
	// ACK, sent after it, still carries their trace context.
	ended []string
}

// NewParticipant returns the span maker of participant node id.
func NewParticipant(p *Provider, id string) *Participant {
	return &Participant{tr: p.Tracer(), id: id, brs: make(map[string]*branchTrace), now: time.Now}
}

type branchTrace struct {
	tp      []byte // the trace context its PREPARE (then COMMIT) carried
	attempt uint32
	parent  context.Context // the coordinator's branch span (remote)
	ctx     context.Context // the span below
	span    trace.Span      // dtx.participant.prepare, .commit or .abort
	wait    trace.Span      // dtx.lock_wait while waiting
	check   trace.Span      // dtx.check while it runs
	force   time.Time       // when the record to force was made
	done    bool            // ended; kept until its last message leaves
}

// parentOf returns the remote context a message carries, or nil if it
// carries none that is sampled.
func parentOf(m *twopc.Message) context.Context {
	sc := Decode(m.Trace)
	if !sc.IsValid() || !sc.IsSampled() {
		return nil
	}
	return trace.ContextWithRemoteSpanContext(context.Background(), sc)
}

// Send sets on each VOTE and ACK of a traced branch its trace context
// (what its PREPARE or COMMIT carried), so that the coordinator looks only
// at the messages that carry one.
func (p *Participant) Send(msgs []twopc.Message) {
	if len(p.brs) == 0 {
		return
	}
	defer p.forgetEnded()
	for i := range msgs {
		m := &msgs[i]
		if m.Type != twopc.MsgVote && m.Type != twopc.MsgAck {
			continue
		}
		if b := p.brs[m.Tx]; b != nil {
			m.Trace = b.tp
		}
	}
}

// Step sees a coordinator's message that carries a trace context, before
// the machine takes it.
func (p *Participant) Step(m twopc.Message) {
	a := twopc.AttemptOf(m.Attempt)
	b := p.brs[m.Tx]
	switch m.Type {
	case twopc.MsgPrepare:
		if b != nil && b.attempt >= a {
			return // a duplicate: the machine answers it with the same vote
		}
		parent := parentOf(&m)
		if parent == nil {
			return
		}
		if b != nil {
			p.end(m.Tx, b, "superseded by a later attempt")
		}
		if len(p.brs) >= MaxLive {
			return
		}
		b = &branchTrace{attempt: a, parent: parent, tp: m.Trace}
		b.ctx, b.span = p.tr.Start(parent, SpanPartPrepare, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(AttrTx.String(m.Tx), AttrNode.String(p.id), AttrAttempt.Int64(int64(a))))
		_, b.wait = p.tr.Start(b.ctx, SpanLockWait)
		p.brs[m.Tx] = b
	case twopc.MsgCommit, twopc.MsgAbort:
		parent := parentOf(&m)
		if b != nil {
			if b.attempt != a || b.wait != nil || b.check != nil {
				return // not this branch's decision, or not prepared: the machine refuses it
			}
			if parent == nil {
				parent = b.parent // a COMMIT resent by a coordinator that restarted
			}
			if b.span != nil {
				if m.Type == twopc.MsgCommit {
					b.span.AddEvent("commit received")
					return // a duplicate COMMIT before COMMITTED is durable
				}
			}
		}
		if parent == nil || len(p.brs) >= MaxLive {
			return
		}
		name := SpanPartCommit
		if m.Type == twopc.MsgAbort {
			name = SpanPartAbort
		}
		if b == nil {
			b = &branchTrace{attempt: a, parent: parent}
			p.brs[m.Tx] = b
		}
		b.tp = m.Trace
		b.ctx, b.span = p.tr.Start(parent, name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(AttrTx.String(m.Tx), AttrNode.String(p.id), AttrAttempt.Int64(int64(a))))
		b.force = p.now()
	}
}

// CheckStart: the branch got its locks and its business check begins.
func (p *Participant) CheckStart(tx string, attempt uint32) {
	b := p.brs[tx]
	if b == nil || b.attempt != attempt || b.wait == nil {
		return
	}
	t := p.now()
	b.wait.End(trace.WithTimestamp(t))
	b.wait = nil
	_, b.check = startAt(p.tr, b.ctx, SpanCheck, t)
}

// CheckEnd: the business check returned err (nil: the branch prepares,
// and its PREPARED record is forced next).
func (p *Participant) CheckEnd(tx string, attempt uint32, err error) {
	b := p.brs[tx]
	if b == nil || b.attempt != attempt || b.check == nil {
		return
	}
	t := p.now()
	if err != nil {
		b.check.SetStatus(codes.Error, err.Error())
	}
	b.check.End(trace.WithTimestamp(t))
	b.check = nil
	b.force = t
}

// Record sees each record once appended (durable if forced).
func (p *Participant) Record(r *twopc.Record) {
	b := p.brs[r.Tx]
	if b == nil || b.span == nil || twopc.AttemptOf(r.Attempt) != b.attempt {
		return
	}
	switch r.Type {
	case twopc.RecPrepared:
		p.forced(b, "PREPARED")
		b.span.SetAttributes(AttrVote.String(twopc.VoteYes.String()))
		b.span.End()
		b.span = nil // kept for the decision
	case twopc.RecVotedNo:
		b.span.SetAttributes(AttrVote.String(twopc.VoteNo.String()), AttrReason.String(r.Reason))
		p.end(r.Tx, b, "")
	case twopc.RecCommitted:
		p.forced(b, "COMMITTED")
		p.end(r.Tx, b, "")
	case twopc.RecAborted:
		if r.Reason != "" {
			b.span.SetAttributes(AttrReason.String(r.Reason))
		}
		p.end(r.Tx, b, "")
	}
}

// forced makes the dtx.force span: from when the record was made (the
// check's end, or the COMMIT taken) to now, when it is durable.
func (p *Participant) forced(b *branchTrace, rec string) {
	if b.force.IsZero() {
		return
	}
	_, s := startAt(p.tr, b.ctx, SpanForce, b.force, trace.WithAttributes(AttrRecord.String(rec)))
	s.End()
	b.force = time.Time{}
}

// end ends what is open of b; b is forgotten once its last message left.
func (p *Participant) end(tx string, b *branchTrace, why string) {
	for _, s := range []trace.Span{b.wait, b.check, b.span} {
		if s != nil {
			if why != "" {
				s.AddEvent(why)
			}
			s.End()
		}
	}
	b.wait, b.check, b.span, b.done = nil, nil, nil, true
	p.ended = append(p.ended, tx)
}

// forgetEnded drops the ended branches once their last messages left.
func (p *Participant) forgetEnded() {
	for _, tx := range p.ended {
		if b := p.brs[tx]; b != nil && b.done {
			delete(p.brs, tx)
		}
	}
	p.ended = p.ended[:0]
}

// Reset forgets every branch (the service restarts from its log: its
// open spans are lost with the crashed incarnation).
func (p *Participant) Reset() {
	clear(p.brs)
	p.ended = p.ended[:0]
}

// Live returns how many branches are followed (tests).
func (p *Participant) Live() int { return len(p.brs) }
