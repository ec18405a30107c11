package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
)

// tracedCluster starts the four components, each exporting its spans to
// exp as they end.
func tracedCluster(t *testing.T, exp *tracetest.InMemoryExporter) *cluster {
	c := newCluster(t)
	provs := map[string]*tracing.Provider{}
	c.tracing = func(id string) *tracing.Provider {
		if provs[id] == nil {
			provs[id] = tracing.NewSyncProvider(exp, "dtx-"+id)
		}
		return provs[id]
	}
	t.Cleanup(func() {
		for _, p := range provs {
			p.Shutdown(context.Background())
		}
	})
	c.start()
	return c
}

// spansOf waits until the transaction span of tx has ended (it ends at END,
// after the last ACK) and returns every span of its trace.
func spansOf(t *testing.T, exp *tracetest.InMemoryExporter, tx string) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var root *tracetest.SpanStub
		all := exp.GetSpans()
		for i := range all {
			if all[i].Name == tracing.SpanTransaction && attr(all[i], tracing.AttrTx) == tx {
				root = &all[i]
			}
		}
		if root != nil {
			var out tracetest.SpanStubs
			for _, s := range all {
				if s.SpanContext.TraceID() == root.SpanContext.TraceID() {
					out = append(out, s)
				}
			}
			// The participants' last spans end when COMMITTED is durable,
			// before their ACKs: they are in by now, but give the last
			// exporter a moment.
			if len(out) >= 28 || time.Now().After(deadline) {
				return out
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s span for %s after 15s (%d spans in all)", tracing.SpanTransaction, tx, len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func attr(s tracetest.SpanStub, k attribute.Key) string {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value.Emit()
		}
	}
	return ""
}

func service(s tracetest.SpanStub) string {
	for _, a := range s.Resource.Attributes() {
		if a.Key == "service.name" {
			return strings.TrimPrefix(a.Value.AsString(), "dtx-")
		}
	}
	return ""
}

// checkTrace checks that spans are one connected trace of a committed
// purchase across the coordinator and the three services: the expected
// spans, each at its component, each the child of the expected one.
func checkTrace(t *testing.T, spans tracetest.SpanStubs, parent trace.SpanContext) {
	t.Helper()
	type key struct{ svc, name, node string }
	byKey := map[key]tracetest.SpanStub{}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		k := key{service(s), s.Name, attr(s, tracing.AttrNode)}
		if s.Name == tracing.SpanForce {
			k.node = attr(s, tracing.AttrRecord)
		}
		if _, dup := byKey[k]; dup {
			t.Errorf("two %v spans", k)
		}
		byKey[k] = s
		byID[s.SpanContext.SpanID()] = s
	}
	get := func(svc, name, node string) tracetest.SpanStub {
		s, ok := byKey[key{svc, name, node}]
		if !ok {
			t.Fatalf("no span %s at %s (node/record %q); have %d spans: %v", name, svc, node, len(spans), names(spans))
		}
		return s
	}
	childOf := func(s, p tracetest.SpanStub) {
		t.Helper()
		if s.Parent.SpanID() != p.SpanContext.SpanID() {
			got := byID[s.Parent.SpanID()]
			t.Errorf("%s at %s: parent is %q at %s, want %s at %s", s.Name, service(s), got.Name, service(got), p.Name, service(p))
		}
	}
	const co = twopc.CoordinatorID
	root := get(co, tracing.SpanTransaction, co)
	if parent.IsValid() {
		if root.Parent.SpanID() != parent.SpanID() || root.SpanContext.TraceID() != parent.TraceID() || !root.Parent.IsRemote() {
			t.Errorf("transaction span's parent is %v (remote %v), want the caller's %v", root.Parent.SpanID(), root.Parent.IsRemote(), parent.SpanID())
		}
	} else if root.Parent.IsValid() {
		t.Errorf("transaction span has parent %v; the caller sent none", root.Parent.SpanID())
	}
	if got := attr(root, tracing.AttrOutcome); got != "committed" {
		t.Errorf("transaction outcome %q, want committed", got)
	}
	prep := get(co, tracing.SpanPrepare, "")
	commit := get(co, tracing.SpanCommit, "")
	childOf(prep, root)
	childOf(commit, root)
	childOf(get(co, tracing.SpanDecision, ""), root)
	for _, svc := range []string{"inventory", "payment", "order"} {
		pb := get(co, tracing.SpanPrepareBr, svc)
		cb := get(co, tracing.SpanCommitBr, svc)
		childOf(pb, prep)
		childOf(cb, commit)
		if v := attr(pb, tracing.AttrVote); v != "YES" {
			t.Errorf("%s branch vote %q, want YES", svc, v)
		}
		pp := get(svc, tracing.SpanPartPrepare, svc)
		childOf(pp, pb)
		if !pp.Parent.IsRemote() {
			t.Errorf("%s: %s's parent is not marked remote", svc, pp.Name)
		}
		childOf(get(svc, tracing.SpanLockWait, ""), pp)
		childOf(get(svc, tracing.SpanCheck, ""), pp)
		childOf(get(svc, tracing.SpanForce, "PREPARED"), pp)
		pc := get(svc, tracing.SpanPartCommit, svc)
		childOf(pc, cb)
		childOf(get(svc, tracing.SpanForce, "COMMITTED"), pc)
	}
	if want := 10 + 3*6; len(spans) != want { // coordinator 10, each service 6
		t.Errorf("%d spans, want %d: %v", len(spans), want, names(spans))
	}
	for _, s := range spans {
		if s.SpanContext.TraceID() != root.SpanContext.TraceID() {
			t.Errorf("%s at %s in trace %v, want %v", s.Name, service(s), s.SpanContext.TraceID(), root.SpanContext.TraceID())
		}
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, service(s)+"/"+s.Name+"/"+attr(s, tracing.AttrNode)+attr(s, tracing.AttrRecord))
	}
	return out
}

// TestTraceAcrossComponents submits purchases to a coordinator and three
// services (gRPC between them, on 127.0.0.1) that trace every transaction,
// and checks that each purchase is one connected trace across the four:
// a unary call's traceparent metadata and an HTTP request's traceparent
// header become the transaction span's parent, and a streamed purchase
// without one starts a trace of its own.
func TestTraceAcrossComponents(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	caller := func() (trace.SpanContext, string) {
		var tid trace.TraceID
		var sid trace.SpanID
		for i := range tid {
			tid[i] = byte(rng.Uint32())
		}
		for i := range sid {
			sid[i] = byte(rng.Uint32())
		}
		tid[0], sid[0] = tid[0]|1, sid[0]|1 // never all zero
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
		return sc, string(tracing.Encode(sc))
	}
	line := func(tx string) string {
		return fmt.Sprintf(`{"transaction_id":%q,"user_id":"user-1","item_id":"item-1","quantity":1,"price":"2.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`, tx)
	}
	exp := tracetest.NewInMemoryExporter()
	c := tracedCluster(t, exp)

	t.Run("grpc-metadata", func(t *testing.T) {
		conn, err := grpc.NewClient(c.grpc[twopc.CoordinatorID], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		parent, tp := caller()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, tracing.Header, tp)
		out, err := dtxv1.NewCoordinatorClient(conn).Submit(ctx, &dtxv1.PurchaseRequest{JsonLine: line("tr-grpc")})
		if err != nil || out.GetStatus() != dtxv1.Status_STATUS_COMMITTED {
			t.Fatalf("submit: %v %v", out, err)
		}
		checkTrace(t, spansOf(t, exp, "tr-grpc"), parent)
	})
	t.Run("http-header", func(t *testing.T) {
		parent, tp := caller()
		req, err := http.NewRequest("POST", "http://"+c.http[twopc.CoordinatorID]+"/v1/purchases", strings.NewReader(line("tr-http")))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(tracing.Header, tp)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("submit: HTTP %d", resp.StatusCode)
		}
		checkTrace(t, spansOf(t, exp, "tr-http"), parent)
	})
	t.Run("stream-no-parent", func(t *testing.T) {
		cl := c.client()
		req, err := purchase.DecodeLine([]byte(line("tr-stream")))
		if err != nil {
			t.Fatal(err)
		}
		o, err := cl.Submit(context.Background(), &req)
		if err != nil || !o.Committed {
			t.Fatalf("submit: %+v %v", o, err)
		}
		checkTrace(t, spansOf(t, exp, "tr-stream"), trace.SpanContext{})
	})
}
