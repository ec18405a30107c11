package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/twopc"
)

// guard is the one place where a server decides who may do what: every gRPC
// call, every protocol message and every HTTP request passes it before it
// reaches anything else. The tables themselves are in package auth.
type guard struct {
	self   string // this node's name
	tls    bool   // mutual TLS: identities come from certificates
	tokens *auth.Tokens
	// senders are the nodes whose messages this node takes: the
	// configured participants at the coordinator, the coordinator at a
	// participant.
	senders map[string]bool

	deniedCalls, deniedMsgs, deniedHTTP atomic.Uint64
}

// grpcActions maps each gRPC method to the action it asks for. A method
// not listed is refused.
var grpcActions = map[string]auth.Action{
	"/dtx.v1.Transport/Deliver":        auth.ActDeliver,
	"/dtx.v1.Transport/DeliverStream":  auth.ActDeliver,
	"/dtx.v1.Coordinator/Submit":       auth.ActSubmit,
	"/dtx.v1.Coordinator/SubmitStream": auth.ActSubmit,
	"/dtx.v1.Coordinator/SubmitTx":     auth.ActSubmitTx,
	"/dtx.v1.Coordinator/Outcome":      auth.ActOutcome,
	"/dtx.v1.Transport/Records":        auth.ActRecords,
	"/dtx.v1.Admin/Call":               auth.ActAdmin,
	"/dtx.v1.Raft/Send":                auth.ActReplicate,
	"/dtx.v1.Raft/SendStream":          auth.ActReplicate,
	"/dtx.v1.Raft/Snapshot":            auth.ActReplicate,
}

// openMethod reports whether any authenticated peer may call method: the
// standard health service says nothing but "serving".
func openMethod(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/")
}

// checkCall authorizes one gRPC call.
func (g *guard) checkCall(ctx context.Context, method string) error {
	id, isTLS, err := auth.FromGRPC(ctx)
	if !g.tls {
		return nil // plaintext: nobody is authenticated (asked for by flag or loopback only)
	}
	if !isTLS {
		g.deniedCalls.Add(1)
		return status.Error(codes.Unauthenticated, "mutual TLS is required")
	}
	if err != nil {
		g.deniedCalls.Add(1)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if openMethod(method) {
		return nil
	}
	a, ok := grpcActions[method]
	if !ok {
		g.deniedCalls.Add(1)
		return status.Errorf(codes.PermissionDenied, "%s: not a method this server authorizes", method)
	}
	if err := auth.Allowed(id, a); err != nil {
		g.deniedCalls.Add(1)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// tap authorizes a call when its headers arrive, before gRPC reads its
// first message: an unauthorized caller costs no buffer for its request.
func (g *guard) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	return ctx, g.checkCall(ctx, info.FullMethodName)
}

// message authorizes one protocol message of a received batch (the
// transport's Authorize hook): the sender is the certificate's identity
// (under TLS) or the one the message claims (plaintext), and the role
// table, the From/To binding and the list of nodes this one takes
// messages from must all agree.
func (g *guard) message(ctx context.Context, m *twopc.Message) error {
	sender := auth.ClaimedIdentity(m)
	if g.tls {
		id, isTLS, err := auth.FromGRPC(ctx)
		switch {
		case !isTLS:
			err = auth.ErrNoIdentity
		case err == nil:
			sender = id
		}
		if err != nil {
			g.deniedMsgs.Add(1)
			return err
		}
	}
	if err := auth.AllowedMessage(sender, g.self, m); err != nil {
		g.deniedMsgs.Add(1)
		return err
	}
	if !g.senders[sender.Node()] {
		g.deniedMsgs.Add(1)
		return fmt.Errorf("%w: %s is not a node %s takes messages from", auth.ErrDenied, sender, g.self)
	}
	return nil
}

// http wraps an HTTP handler with the check of action a (0: open to all,
// for liveness and readiness probes). With TLS or a token file, a request
// must present a verified client certificate or a bearer token whose
// identity may do a; without either, nobody is authenticated (plaintext
// on loopback, or --insecure).
func (g *guard) http(a auth.Action, h http.HandlerFunc) http.HandlerFunc {
	if a == 0 {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !g.tls && g.tokens == nil {
			h(w, r)
			return
		}
		id, err := g.httpIdentity(r)
		if err != nil {
			g.deniedHTTP.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="dtx"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
			return
		}
		if err := auth.Allowed(id, a); err != nil {
			g.deniedHTTP.Add(1)
			writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
			return
		}
		h(w, r)
	}
}

func (g *guard) httpIdentity(r *http.Request) (auth.Identity, error) {
	if id, ok, err := auth.FromHTTPS(r); ok {
		return id, err
	}
	if g.tokens != nil {
		if id, ok, err := g.tokens.FromBearer(r); ok {
			return id, err
		}
	}
	return auth.Identity{}, auth.ErrNoIdentity
}

// peerTLS returns the client TLS configuration for dialling peer: the
// process's own certificate, and a check that the server at the other end
// is that very node (a certificate of another role or another node is
// refused, so nobody holding some certificate of the CA can stand in for a
// peer and learn its traffic).
func peerTLS(base *tls.Config, peer string) *tls.Config {
	want := auth.Participant(peer)
	if peer == twopc.CoordinatorID {
		want = auth.Coordinator
	}
	return ExpectServer(base, want)
}

// ExpectServer returns a copy of a client TLS configuration that accepts
// only a server whose certificate names identity want (auth.ExpectServer).
func ExpectServer(base *tls.Config, want auth.Identity) *tls.Config {
	return auth.ExpectServer(base, want)
}

// isLoopback reports whether addr (host:port) only binds loopback
// addresses. An empty host ("":7100, all interfaces) is not loopback.
func isLoopback(addr string) bool {
	if strings.Contains(addr, ",") { // the replicas of a node
		for _, a := range strings.Split(addr, ",") {
			if !isLoopback(a) {
				return false
			}
		}
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
