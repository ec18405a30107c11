package server

import (
	"context"
	"net/http"

	"google.golang.org/grpc/metadata"

	"github.com/dtx-dev/dtx/tracing"
)

// startTracing starts the process's span pipeline (nil when tracing is
// off); its spans name the process "dtx-ID".
func (b *base) startTracing() error {
	if b.cfg.Tracing != nil {
		b.tracing = b.cfg.Tracing
		return nil
	}
	tp, err := tracing.Start(context.Background(), b.cfg.Trace, "dtx-"+b.cfg.ID)
	if err != nil {
		return err
	}
	b.tracing = tp
	return nil
}

// grpcTraceParent returns ctx carrying the caller's trace context from
// the gRPC metadata (traceparent, tracestate), when tracing is on.
func (b *base) grpcTraceParent(ctx context.Context) context.Context {
	if b.tracing == nil {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return tracing.WithParent(ctx, first(md.Get(tracing.Header)), first(md.Get("tracestate")))
}

// httpTraceParent is grpcTraceParent for an HTTP request's headers.
func (b *base) httpTraceParent(r *http.Request) context.Context {
	if b.tracing == nil {
		return r.Context()
	}
	return tracing.WithParent(r.Context(), r.Header.Get(tracing.Header), r.Header.Get("tracestate"))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}
