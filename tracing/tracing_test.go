package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/dtx-dev/dtx/twopc"
)

var nodes = []string{"a", "b"}

func branches() []twopc.Branch {
	return []twopc.Branch{{Node: "a", Op: []byte("x")}, {Node: "b", Op: []byte("x")}}
}

func msgs(typ twopc.MsgType, tx string) []twopc.Message {
	out := make([]twopc.Message, len(nodes))
	for i, n := range nodes {
		out[i] = twopc.Message{Type: typ, From: twopc.CoordinatorID, To: n, Tx: tx, Attempt: 1}
	}
	return out
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %s among %d", name, len(spans))
	return tracetest.SpanStub{}
}

func attrOf(s tracetest.SpanStub, k string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == k {
			return a.Value.Emit()
		}
	}
	return ""
}

// TestCoordinatorAbort follows a transaction that b votes NO on: the
// transaction span says aborted and why, the NO vote decides (a
// dtx.decision span), the ABORT sent after the record still carries a's
// branch context, and the transaction is forgotten once it has left.
func TestCoordinatorAbort(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := NewSyncProvider(exp, "test")
	defer p.Shutdown(context.Background())
	c := NewCoordinator(p, twopc.CoordinatorID)
	c.Begin(context.Background(), "t1", branches())
	prep := msgs(twopc.MsgPrepare, "t1")
	c.Send(prep)
	for _, m := range prep {
		if sc := Decode(m.Trace); !sc.IsValid() || !sc.IsSampled() {
			t.Fatalf("PREPARE to %s carries no sampled trace context: %q", m.To, m.Trace)
		}
	}
	if Decode(prep[0].Trace).SpanID() == Decode(prep[1].Trace).SpanID() {
		t.Fatal("both branches carry the same span")
	}
	c.Step(twopc.Message{Type: twopc.MsgVote, From: "a", To: twopc.CoordinatorID, Tx: "t1", Vote: twopc.VoteYes, Attempt: 1, Trace: prep[0].Trace})
	c.Step(twopc.Message{Type: twopc.MsgVote, From: "b", To: twopc.CoordinatorID, Tx: "t1", Vote: twopc.VoteNo, Reason: "no stock", Attempt: 1, Trace: prep[1].Trace})
	c.Record(&twopc.Record{Type: twopc.RecAbort, Tx: "t1", Nodes: []string{"a"}, Reason: "b: no stock", Attempt: 1})
	abort := []twopc.Message{{Type: twopc.MsgAbort, From: twopc.CoordinatorID, To: "a", Tx: "t1", Attempt: 1}}
	c.Send(abort)
	if string(abort[0].Trace) != string(prep[0].Trace) {
		t.Errorf("ABORT to a carries %q, want its branch's %q", abort[0].Trace, prep[0].Trace)
	}
	if c.Live() != 0 {
		t.Errorf("%d transactions still followed after the ABORTs left", c.Live())
	}
	spans := exp.GetSpans()
	root := spanNamed(t, spans, SpanTransaction)
	if got := attrOf(root, string(AttrOutcome)); got != "aborted" {
		t.Errorf("outcome %q, want aborted", got)
	}
	if got := attrOf(root, string(AttrReason)); got != "b: no stock" {
		t.Errorf("reason %q", got)
	}
	d := spanNamed(t, spans, SpanDecision)
	if d.Parent.SpanID() != root.SpanContext.SpanID() || attrOf(d, string(AttrOutcome)) != "ABORT" {
		t.Errorf("decision span %+v", d)
	}
	n := 0
	for _, s := range spans {
		if s.Name == SpanPrepareBr {
			n++
		}
	}
	if n != 2 || len(spans) != 5 { // transaction, prepare, 2 branches, decision
		t.Errorf("%d branch spans, %d spans in all; want 2 and 5", n, len(spans))
	}
}

// TestParticipantSpans follows a branch through PREPARE, its check and
// its forced records, and checks that its VOTE and ACK carry its trace
// context back.
func TestParticipantSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := NewSyncProvider(exp, "test")
	defer p.Shutdown(context.Background())
	c := NewCoordinator(p, twopc.CoordinatorID)
	c.Begin(context.Background(), "t1", branches())
	prep := msgs(twopc.MsgPrepare, "t1")
	c.Send(prep)
	part := NewParticipant(p, "a")
	part.Step(prep[0])
	part.CheckStart("t1", 1)
	part.CheckEnd("t1", 1, nil)
	part.Record(&twopc.Record{Type: twopc.RecPrepared, Tx: "t1", Attempt: 1, Force: true})
	vote := []twopc.Message{{Type: twopc.MsgVote, From: "a", To: twopc.CoordinatorID, Tx: "t1", Vote: twopc.VoteYes, Attempt: 1}}
	part.Send(vote)
	if string(vote[0].Trace) != string(prep[0].Trace) {
		t.Errorf("VOTE carries %q, want the PREPARE's %q", vote[0].Trace, prep[0].Trace)
	}
	commit := twopc.Message{Type: twopc.MsgCommit, From: twopc.CoordinatorID, To: "a", Tx: "t1", Attempt: 1, Trace: prep[0].Trace}
	part.Step(commit)
	part.Record(&twopc.Record{Type: twopc.RecCommitted, Tx: "t1", Attempt: 1, Force: true})
	ack := []twopc.Message{{Type: twopc.MsgAck, From: "a", To: twopc.CoordinatorID, Tx: "t1", Attempt: 1}}
	part.Send(ack)
	if len(ack[0].Trace) == 0 {
		t.Error("ACK carries no trace context")
	}
	if part.Live() != 0 {
		t.Errorf("%d branches still followed after the ACK left", part.Live())
	}
	spans := exp.GetSpans()
	pp := spanNamed(t, spans, SpanPartPrepare)
	if pp.Parent.SpanID() != Decode(prep[0].Trace).SpanID() || !pp.Parent.IsRemote() {
		t.Errorf("participant span's parent %v, want the PREPARE's %v", pp.Parent.SpanID(), Decode(prep[0].Trace).SpanID())
	}
	for _, name := range []string{SpanLockWait, SpanCheck} {
		if s := spanNamed(t, spans, name); s.Parent.SpanID() != pp.SpanContext.SpanID() {
			t.Errorf("%s is not a child of %s", name, SpanPartPrepare)
		}
	}
	forces := 0
	for _, s := range spans {
		if s.Name == SpanForce {
			forces++
		}
	}
	if forces != 2 {
		t.Errorf("%d force spans, want 2 (PREPARED, COMMITTED)", forces)
	}
}

// TestUntracedCostsNothing checks that a transaction the coordinator does
// not sample (or whose caller does not trace it) gets no span, no trace
// context on its messages, and costs no allocation in the tracers.
func TestUntracedCostsNothing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := &Provider{tp: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), sample: 1e-12}
	defer p.Shutdown(context.Background())
	c := NewCoordinator(p, twopc.CoordinatorID)
	part := NewParticipant(p, "a")
	unsampled := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	bs := branches()
	prep, votes := msgs(twopc.MsgPrepare, "t1"), msgs(twopc.MsgVote, "t1")
	rec := &twopc.Record{Type: twopc.RecCommit, Tx: "t1", Attempt: 1}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		for _, cx := range []context.Context{ctx, unsampled} {
			c.Begin(cx, "t1", bs)
			c.Send(prep)
			c.Record(rec)
			part.Send(votes)
			part.CheckStart("t1", 1)
			part.CheckEnd("t1", 1, nil)
			part.Record(rec)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per untraced transaction, want 0", allocs)
	}
	if len(prep[0].Trace) != 0 || c.Live() != 0 || len(exp.GetSpans()) != 0 {
		t.Errorf("untraced: trace %q, %d followed, %d spans", prep[0].Trace, c.Live(), len(exp.GetSpans()))
	}
}

// BenchmarkTransaction is the tracers' cost for one committed transaction
// of three branches (coordinator and services in one process), spans
// batched to an exporter that drops them: sampled, and not sampled.
func BenchmarkTransaction(b *testing.B) {
	for _, bc := range []struct {
		name   string
		sample float64
	}{{"traced", 1}, {"untraced", 1e-12}} {
		b.Run(bc.name, func(b *testing.B) {
			p := NewProvider(discard{}, bc.sample, "bench", nil)
			defer p.Shutdown(context.Background())
			c := NewCoordinator(p, twopc.CoordinatorID)
			nodes := []string{"inventory", "payment", "order"}
			parts := make([]*Participant, len(nodes))
			bs := make([]twopc.Branch, len(nodes))
			for i, n := range nodes {
				parts[i] = NewParticipant(p, n)
				bs[i] = twopc.Branch{Node: n}
			}
			out := make([]twopc.Message, len(nodes))
			one := make([]twopc.Message, 1)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				tx := "tx"
				c.Begin(context.Background(), tx, bs)
				for j, n := range nodes {
					out[j] = twopc.Message{Type: twopc.MsgPrepare, To: n, Tx: tx, Attempt: 1}
				}
				c.Send(out)
				for j, part := range parts {
					part.Step(out[j])
					part.CheckStart(tx, 1)
					part.CheckEnd(tx, 1, nil)
					part.Record(&twopc.Record{Type: twopc.RecPrepared, Tx: tx, Attempt: 1})
					one[0] = twopc.Message{Type: twopc.MsgVote, From: nodes[j], Tx: tx, Vote: twopc.VoteYes, Attempt: 1}
					part.Send(one)
					if len(one[0].Trace) > 0 {
						c.Step(one[0])
					}
				}
				c.Record(&twopc.Record{Type: twopc.RecCommit, Tx: tx, Attempt: 1})
				for j, n := range nodes {
					out[j] = twopc.Message{Type: twopc.MsgCommit, To: n, Tx: tx, Attempt: 1}
				}
				c.Send(out)
				for j, part := range parts {
					if len(out[j].Trace) > 0 {
						part.Step(out[j])
					}
					part.Record(&twopc.Record{Type: twopc.RecCommitted, Tx: tx, Attempt: 1})
					one[0] = twopc.Message{Type: twopc.MsgAck, From: nodes[j], Tx: tx, Attempt: 1}
					part.Send(one)
					if len(one[0].Trace) > 0 {
						c.Step(one[0])
					}
				}
				c.Record(&twopc.Record{Type: twopc.RecEnd, Tx: tx, Attempt: 1})
			}
			if c.Live() != 0 {
				b.Fatalf("%d transactions still followed", c.Live())
			}
		})
	}
}
