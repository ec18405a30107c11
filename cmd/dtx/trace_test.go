package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
)

// stdoutSpan is the part of a span, as the stdout exporter writes it, that
// the test reads.
type stdoutSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct {
		TraceID, SpanID string
		Remote          bool
	}
	Resource []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s stdoutSpan) service() string {
	for _, a := range s.Resource {
		if a.Key == "service.name" {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

// TestServeTraceStdout runs the four components as `dtx serve --trace
// stdout` processes, each writing its spans to a file, submits one
// purchase over HTTP with a traceparent header, drains the processes (which
// flushes their spans) and checks the files: one trace, the caller's span
// the transaction span's parent, every other span's parent among the
// spans, and the spans each component should have made.
func TestServeTraceStdout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four dtx processes")
	}
	bin := buildDtx(t)
	c := newClCluster(t, bin, 10, 10, 1)
	c.flags = map[string][]string{}
	for _, n := range clusterComponents {
		c.flags[n] = []string{"--trace", "stdout", "--trace-endpoint", filepath.Join(c.dir, n+".spans")}
	}
	c.startAll()
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	line := `{"transaction_id":"traced-1","user_id":"user-0","item_id":"item-0","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`
	req, err := http.NewRequest("POST", "http://"+c.http[twopc.CoordinatorID]+"/v1/purchases", strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(tracing.Header, "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Status, Reason string }
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Status != "COMMITTED" {
		t.Fatalf("purchase: %+v (HTTP %d)", out, resp.StatusCode)
	}
	// Every ACK in (the last spans have ended), then drain: the spans are
	// flushed.
	c.settle(20 * time.Second)
	for _, n := range clusterComponents {
		c.kill(n, syscall.SIGTERM)
	}
	var spans []stdoutSpan
	for _, n := range clusterComponents {
		f, err := os.Open(filepath.Join(c.dir, n+".spans"))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var s stdoutSpan
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Fatalf("%s: %v: %s", n, err, sc.Text())
			}
			spans = append(spans, s)
		}
		f.Close()
	}
	ids := map[string]bool{}
	count := map[string]int{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID] = true
		count[s.service()+" "+s.Name]++
		if s.SpanContext.TraceID != traceID {
			t.Errorf("%s at %s: trace %s, want %s", s.Name, s.service(), s.SpanContext.TraceID, traceID)
		}
	}
	for _, s := range spans {
		switch {
		case s.Name == tracing.SpanTransaction:
			if s.Parent.SpanID != parentID || !s.Parent.Remote {
				t.Errorf("transaction span's parent %s (remote %v), want the caller's %s", s.Parent.SpanID, s.Parent.Remote, parentID)
			}
		case !ids[s.Parent.SpanID]:
			t.Errorf("%s at %s: parent %s is not a span of the trace", s.Name, s.service(), s.Parent.SpanID)
		}
	}
	want := map[string]int{
		"dtx-coordinator " + tracing.SpanTransaction: 1, "dtx-coordinator " + tracing.SpanPrepare: 1,
		"dtx-coordinator " + tracing.SpanPrepareBr: 3, "dtx-coordinator " + tracing.SpanDecision: 1,
		"dtx-coordinator " + tracing.SpanCommit: 1, "dtx-coordinator " + tracing.SpanCommitBr: 3,
	}
	for _, svc := range []string{"inventory", "payment", "order"} {
		for name, n := range map[string]int{tracing.SpanPartPrepare: 1, tracing.SpanLockWait: 1, tracing.SpanCheck: 1, tracing.SpanForce: 2, tracing.SpanPartCommit: 1} {
			want["dtx-"+svc+" "+name] = n
		}
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%d spans %q, want %d", count[k], k, n)
		}
	}
	if len(spans) != 28 {
		t.Errorf("%d spans, want 28: %v", len(spans), count)
	}
}
