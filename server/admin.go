package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/server/console"
	"github.com/dtx-dev/dtx/transport/grpcnet"
	"github.com/dtx-dev/dtx/twopc"
)

// The admin API: what an operator sees of a running process and may ask
// of it. Every action is one function from a request to a JSON document,
// served twice: over HTTP under /v1/admin/ and over gRPC by Admin.Call
// (the same document in AdminReply.json). Both need the admin role
// (auth.ActAdmin: a dtx://admin/NAME certificate, or a bearer token of an
// admin identity); the guard checks it before the action runs.
//
// The coordinator's actions are in admin_coord.go, a participant's in
// admin_part.go.

// adminReq is one admin request, whichever way it came.
type adminReq struct {
	Tx      string // timeline, retry, force
	Outcome string // force: COMMIT or ABORT
	Note    string // force
	Limit   int    // transactions, timeline: most items returned (0: default)
	// Who is the caller's identity (dtx://admin/NAME), "" without
	// authentication (plaintext on loopback).
	Who string
}

// adminAction answers one admin request with a JSON-able document.
type adminAction func(ctx context.Context, r adminReq) (any, error)

// adminState is the admin API of a process: its actions by name, and the
// records of its log about one transaction (Transport.Records; nil on a
// process that does not serve them).
type adminState struct {
	actions map[string]adminAction
	records func(tx string, fn func(seq uint64, r twopc.Record)) error
}

// adminError is an admin request's failure with the HTTP status it gets.
type adminError struct {
	code int
	msg  string
}

func (e *adminError) Error() string { return e.msg }

func badAdmin(format string, args ...any) error {
	return &adminError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// adminCode maps an error to its HTTP status and gRPC code.
func adminCode(err error) (int, codes.Code) {
	var ae *adminError
	switch {
	case errors.As(err, &ae):
		switch ae.code {
		case http.StatusNotFound:
			return ae.code, codes.NotFound
		case http.StatusConflict:
			return ae.code, codes.FailedPrecondition
		}
		return ae.code, codes.InvalidArgument
	case errors.Is(err, twopc.ErrNotInDoubt):
		return http.StatusConflict, codes.FailedPrecondition
	case errors.Is(err, twopc.ErrInvalidTx):
		return http.StatusBadRequest, codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusGatewayTimeout, codes.DeadlineExceeded
	}
	return http.StatusServiceUnavailable, codes.Unavailable
}

// adminAct registers action name, served over HTTP at pattern; parse
// reads the request's parameters (nil: none).
func (b *base) adminAct(name, pattern string, act adminAction, parse func(*http.Request) (adminReq, error)) {
	if b.admin.actions == nil {
		b.admin.actions = map[string]adminAction{}
	}
	b.admin.actions[name] = act
	b.handle(pattern, auth.ActAdmin, func(w http.ResponseWriter, r *http.Request) {
		var req adminReq
		if parse != nil {
			var err error
			if req, err = parse(r); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		if id, err := b.guard.httpIdentity(r); err == nil {
			req.Who = id.URI()
		}
		out, err := act(r.Context(), req)
		if err != nil {
			code, _ := adminCode(err)
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// txFromPath reads the {id} of an admin URL, and ?limit=.
func txFromPath(r *http.Request) (adminReq, error) {
	req := adminReq{Tx: r.PathValue("id")}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return req, fmt.Errorf("limit %q: want a number >= 0", s)
		}
		req.Limit = n
	}
	return req, nil
}

// checkTx checks a transaction id of an admin request.
func checkTx(tx string) error {
	if tx == "" {
		return badAdmin("transaction id is required")
	}
	if err := twopc.ValidTxID(tx); err != nil {
		return badAdmin("transaction id: %v", err)
	}
	return nil
}

// registerServices registers the Transport service (the network's, plus
// Records) and the Admin service on the gRPC server.
func (b *base) registerServices() {
	dtxv1.RegisterTransportServer(b.grpc, &transportService{Network: b.net, b: b})
	dtxv1.RegisterAdminServer(b.grpc, &adminService{b: b})
}

// transportService is the network's Transport service with Records.
type transportService struct {
	*grpcnet.Network
	b *base
}

// maxRecords bounds the records one Records call returns.
const maxRecords = 2000

// Records returns this node's log records about one transaction. The
// guard lets only the coordinator call it (auth.ActRecords).
func (s *transportService) Records(ctx context.Context, r *dtxv1.RecordsRequest) (*dtxv1.RecordsReply, error) {
	if s.b.admin.records == nil {
		return nil, status.Error(codes.Unimplemented, "this node serves no log records")
	}
	tx := r.GetTransactionId()
	if err := checkTx(tx); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	limit := int(r.GetLimit())
	if limit <= 0 || limit > maxRecords {
		limit = maxRecords
	}
	out := &dtxv1.RecordsReply{}
	err := s.b.admin.records(tx, func(seq uint64, rec twopc.Record) {
		if len(out.Records) >= limit {
			out.Truncated = true
			return
		}
		out.Records = append(out.Records, &dtxv1.LogRecord{Seq: seq, Type: rec.Type.String(), Attempt: rec.Attempt, Text: rec.String()})
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return out, nil
}

// adminService is the gRPC face of the admin API.
type adminService struct {
	dtxv1.UnimplementedAdminServer
	b *base
}

func (s *adminService) Call(ctx context.Context, r *dtxv1.AdminRequest) (*dtxv1.AdminReply, error) {
	act := s.b.admin.actions[r.GetAction()]
	if act == nil {
		names := make([]string, 0, len(s.b.admin.actions))
		for n := range s.b.admin.actions {
			names = append(names, n)
		}
		slices.Sort(names)
		action := r.GetAction()
		if len(action) > 64 {
			action = action[:64] + "..."
		}
		return nil, status.Errorf(codes.InvalidArgument, "unknown admin action %q (this process has: %s)", action, strings.Join(names, ", "))
	}
	req := adminReq{Tx: r.GetTransactionId(), Outcome: r.GetOutcome(), Note: r.GetNote()}
	if id, ok, err := auth.FromGRPC(ctx); ok && err == nil {
		req.Who = id.URI()
	}
	out, err := act(ctx, req)
	if err != nil {
		_, code := adminCode(err)
		return nil, status.Error(code, err.Error())
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &dtxv1.AdminReply{Json: b}, nil
}

func newCounterFunc(name, help string, f func() float64) prometheus.CounterFunc {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
}

// mountConsole serves the web console at /console/. Its files are static
// and hold nothing secret, so they are served to anyone who reaches the
// HTTP port; every API call the page makes needs the admin role.
func mountConsole(mux *http.ServeMux) {
	files := http.FileServerFS(console.Files())
	mux.Handle("GET /console/", http.StripPrefix("/console/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})))
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
}
