// Package tracing makes OpenTelemetry spans of dtx transactions: at the
// coordinator a span per transaction with a span per phase and per branch,
// at each participant a span per branch with its lock wait, business check
// and forced record. The spans of one transaction share one trace across
// processes: every PREPARE, COMMIT and ABORT carries the W3C traceparent of
// the coordinator's branch span (twopc.Message.Trace), and a client's own
// trace context (gRPC metadata or HTTP header "traceparent") is the parent
// of the transaction span.
//
// The protocol machines (twopc) know nothing of it: the drivers
// (coordinator.Config.Tracer, participant.Config.Tracer) hand this package
// what they see (messages sent and taken, business checks, records once
// appended), and it makes the spans. With tracing off no tracer is set, and
// the drivers do nothing more than before.
//
// A transaction recovered from the log after a coordinator restart is not
// traced again: its spans up to the crash were exported, or lost with the
// process; the COMMITs resent for it carry no trace context.
//
// Sampling is decided once per transaction, at the coordinator, before any
// span is made: a caller's trace context is followed (sampled or not), and
// a transaction without one is traced with probability Config.Sample. The
// services trace exactly the branches whose messages carry a sampled
// context, and their VOTEs and ACKs carry it back, so that the coordinator
// looks at no other message. An untraced transaction costs a random draw
// and a map lookup or two per message: no allocation.
package tracing

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Exporters names the values of Config.Exporter.
var Exporters = []string{"off", "stdout", "otlp-grpc", "otlp-http", "discard"}

// Config says whether and where a process exports its spans.
type Config struct {
	// Exporter: off (default), stdout (JSON, one span per object; to
	// Endpoint if it names a file), otlp-grpc or otlp-http (to Endpoint, an
	// OTLP collector), or discard (spans are made and dropped: to measure
	// what making them costs).
	Exporter string
	// Endpoint: otlp-grpc host:port (default localhost:4317), otlp-http
	// host:port (default localhost:4318), or for stdout a file to append
	// to ("" or "-": standard output).
	Endpoint string
	// Insecure sends OTLP without TLS.
	Insecure bool
	// Sample is the fraction of transactions traced when the caller sent
	// no trace context (a caller's sampled or unsampled parent is
	// followed). 0 is taken as 1.
	Sample float64
}

// On reports whether spans are made.
func (c Config) On() bool { return c.Exporter != "" && c.Exporter != "off" }

// Validate reports a config that cannot work, naming the bad value.
func (c Config) Validate() error {
	ok := c.Exporter == ""
	for _, e := range Exporters {
		ok = ok || c.Exporter == e
	}
	switch {
	case !ok:
		return fmt.Errorf("tracing: unknown exporter %q (want one of %s)", c.Exporter, strings.Join(Exporters, ", "))
	case c.Sample < 0 || c.Sample > 1:
		return fmt.Errorf("tracing: sample fraction %v is not in [0, 1]", c.Sample)
	}
	return nil
}

// Provider is a process's span pipeline. Shutdown flushes it.
type Provider struct {
	tp     *sdktrace.TracerProvider
	closer io.Closer
	// sample is the fraction of transactions without a caller's trace
	// context that the coordinator traces. It decides before it makes any
	// span, so that an untraced transaction costs no allocation; the SDK's
	// sampler then follows the parent (or samples a root).
	sample float64
}

// Start builds the span pipeline of c for the process named service (the
// resource's service.name). It returns nil, nil when c is off.
func Start(ctx context.Context, c Config, service string) (*Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.On() {
		return nil, nil
	}
	var (
		exp    sdktrace.SpanExporter
		closer io.Closer
		err    error
	)
	switch c.Exporter {
	case "stdout":
		var w io.Writer = os.Stdout
		if c.Endpoint != "" && c.Endpoint != "-" {
			f, ferr := os.OpenFile(c.Endpoint, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if ferr != nil {
				return nil, fmt.Errorf("tracing: stdout exporter file: %w", ferr)
			}
			w, closer = f, f
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case "otlp-grpc":
		opts := []otlptracegrpc.Option{}
		if c.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpoint(c.Endpoint))
		}
		if c.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case "otlp-http":
		opts := []otlptracehttp.Option{}
		if c.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpoint(c.Endpoint))
		}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case "discard":
		exp = discard{}
	}
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, fmt.Errorf("tracing: %s exporter: %w", c.Exporter, err)
	}
	return NewProvider(exp, c.Sample, service, closer), nil
}

// NewProvider returns a provider that batches spans to exp, sampling a
// fraction sample (0: all) of the transactions that arrive without a trace
// context; closer, if set, is closed after the exporter at Shutdown.
func NewProvider(exp sdktrace.SpanExporter, sample float64, service string, closer io.Closer) *Provider {
	if sample <= 0 {
		sample = 1
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	)
	return &Provider{tp: tp, closer: closer, sample: sample}
}

// NewSyncProvider is NewProvider with every span exported as it ends, and
// all sampled (tests).
func NewSyncProvider(exp sdktrace.SpanExporter, service string) *Provider {
	res := resource.NewSchemaless(attribute.String("service.name", service))
	return &Provider{tp: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res)), sample: 1}
}

// Tracer returns the provider's tracer for dtx spans.
func (p *Provider) Tracer() trace.Tracer { return p.tp.Tracer("github.com/dtx-dev/dtx") }

// Shutdown exports what is buffered and stops the pipeline.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	err := p.tp.Shutdown(ctx)
	if p.closer != nil {
		err = errors.Join(err, p.closer.Close())
	}
	return err
}

type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// Header is the W3C trace context header (and gRPC metadata key).
const Header = "traceparent"

// Encode returns sc as a W3C traceparent ("00-TRACEID-SPANID-FLAGS").
func Encode(sc trace.SpanContext) []byte {
	tid, sid := sc.TraceID(), sc.SpanID()
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	return hex.AppendEncode(b, []byte{byte(sc.TraceFlags())})
}

// Decode returns the span context of a W3C traceparent, marked remote; it
// is invalid if tp is not one.
func Decode(tp []byte) trace.SpanContext {
	if len(tp) == 0 {
		return trace.SpanContext{}
	}
	return Parent(context.Background(), string(tp), "")
}

// Parent returns the remote span context named by a traceparent header
// value (and its tracestate), invalid if there is none.
func Parent(ctx context.Context, traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx = propagation.TraceContext{}.Extract(ctx, headerCarrier{traceparent, tracestate})
	return trace.SpanContextFromContext(ctx)
}

// WithParent returns ctx carrying the caller's trace context given as
// header values; ctx unchanged if they name none.
func WithParent(ctx context.Context, traceparent, tracestate string) context.Context {
	sc := Parent(ctx, traceparent, tracestate)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

type headerCarrier struct{ parent, state string }

func (h headerCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return h.parent
	case "tracestate":
		return h.state
	}
	return ""
}
func (headerCarrier) Set(string, string) {}
func (headerCarrier) Keys() []string     { return []string{"traceparent", "tracestate"} }

// startAt starts a span at t (the zero time: now).
func startAt(tr trace.Tracer, ctx context.Context, name string, t time.Time, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !t.IsZero() {
		opts = append(opts, trace.WithTimestamp(t))
	}
	return tr.Start(ctx, name, opts...)
}
