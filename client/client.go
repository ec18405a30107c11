// Package client is the Go client of a dtx coordinator process: submit a
// purchase (or any transaction), ask for an outcome. It retries with
// backoff across connection loss and coordinator restarts, always with the
// same transaction id, and never guesses an outcome: a call that gives up
// returns an error, meaning "not known", never "rolled back".
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// Config configures a Client.
type Config struct {
	// Addr is the coordinator's gRPC address (host:port), or the
	// addresses of a replicated coordinator's replicas, comma-separated
	// (the same as Addrs).
	Addr string
	// Addrs are the replicas of a replicated coordinator: calls go to the
	// one that leads, found by following the refusals of the others (which
	// name the leader) or, failing that, trying the next. Every retry
	// carries the same transaction id.
	Addrs []string
	// TLS, if set, is the client side of mutual TLS: the client's
	// certificate and the CA. The server must prove that it is Server.
	TLS *tls.Config
	// Server is the identity the coordinator's certificate must name
	// (default dtx://coordinator); used with TLS only.
	Server auth.Identity
	// CallTimeout bounds one attempt (default 30s).
	CallTimeout time.Duration
	// RetryFor bounds all the attempts of one call (default 2m).
	RetryFor time.Duration
	// BackoffBase and BackoffMax bound the pause between attempts
	// (defaults 50ms and 2s; doubling, with jitter).
	BackoffBase, BackoffMax time.Duration
	// MaxMsgBytes bounds a call's size (default 4 MiB).
	MaxMsgBytes int
	// Streams is the number of SubmitStream streams that Submit and
	// SubmitLine share among all their concurrent calls (default 2). A
	// stream carries many transactions at once, which costs far less than
	// one unary call each.
	Streams int
	// Unary makes Submit and SubmitLine use one unary Submit call per
	// transaction instead of the streams (the client also falls back to
	// it on its own against a coordinator without SubmitStream).
	Unary bool
}

// Client talks to one coordinator (or its replicas). It is safe for
// concurrent use.
type Client struct {
	cfg Config
	// eps are the coordinator processes known: the configured ones, then
	// leaders named by a replica's refusal (dialled when first named).
	// The slice is replaced, never changed, under epMu.
	eps      atomic.Pointer[[]*endpoint]
	epMu     sync.Mutex
	dialOpts []grpc.DialOption
	cur      atomic.Int32 // the endpoint in use (the leader, as far as known)
	retries  atomic.Uint64

	ctx           context.Context // the streams' lifetime: until Close
	cancel        context.CancelFunc
	streamsOpened atomic.Uint64
}

// endpoint is one coordinator process: its connection and stream pool.
type endpoint struct {
	addr  string
	conn  *grpc.ClientConn
	api   dtxv1.CoordinatorClient
	slots []streamSlot
	next  atomic.Uint64 // round robin over slots
	// noStream is set once the coordinator answered SubmitStream with
	// UNIMPLEMENTED: unary calls from then on.
	noStream atomic.Bool
}

// streamSlot holds one stream of the pool (nil until first use, replaced
// when broken).
type streamSlot struct {
	mu sync.Mutex
	s  *stream
}

// Dial returns a client; the connection is made on first use.
func Dial(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		for _, a := range strings.Split(cfg.Addr, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Addrs = append(cfg.Addrs, a)
			}
		}
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("client: no coordinator address")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 2 * time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 50 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = max(2*time.Second, cfg.BackoffBase)
	}
	if cfg.MaxMsgBytes <= 0 {
		cfg.MaxMsgBytes = 4 << 20
	}
	if cfg.Streams <= 0 {
		cfg.Streams = 2
	}
	if cfg.Streams > 64 {
		return nil, fmt.Errorf("client: Streams %d: at most 64", cfg.Streams)
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		want := cfg.Server
		if want.Role == 0 {
			want = auth.Coordinator
		}
		creds = credentials.NewTLS(auth.ExpectServer(cfg.TLS, want))
	}
	c := &Client{cfg: cfg, dialOpts: []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.MaxMsgBytes), grpc.MaxCallRecvMsgSize(cfg.MaxMsgBytes))}}
	var eps []*endpoint
	for _, addr := range cfg.Addrs {
		e, err := c.dialEndpoint(addr)
		if err != nil {
			for _, e := range eps {
				e.conn.Close()
			}
			return nil, err
		}
		eps = append(eps, e)
	}
	c.eps.Store(&eps)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// maxEndpoints bounds the coordinator processes a client learns of from
// refusals that name a leader it was not given.
const maxEndpoints = 16

func (c *Client) dialEndpoint(addr string) (*endpoint, error) {
	conn, err := grpc.NewClient(addr, c.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", addr, err)
	}
	return &endpoint{addr: addr, conn: conn, api: dtxv1.NewCoordinatorClient(conn), slots: make([]streamSlot, c.cfg.Streams)}, nil
}

func (c *Client) endpoints() []*endpoint { return *c.eps.Load() }

// endpoint returns the endpoint in use and its index.
func (c *Client) endpoint() (int32, *endpoint) {
	i := c.cur.Load()
	return i, c.endpoints()[i]
}

// learn returns the index of the endpoint at addr, dialling it first if
// the client does not know it yet (-1: it cannot).
func (c *Client) learn(addr string) int32 {
	c.epMu.Lock()
	defer c.epMu.Unlock()
	eps := c.endpoints()
	for i, e := range eps {
		if e.addr == addr {
			return int32(i)
		}
	}
	if len(eps) >= maxEndpoints || c.ctx.Err() != nil {
		return -1
	}
	e, err := c.dialEndpoint(addr)
	if err != nil {
		return -1
	}
	grown := append(slices.Clip(eps), e)
	c.eps.Store(&grown)
	return int32(len(grown) - 1)
}

// redirect moves the client off endpoint at, whose call failed with err:
// to the leader err names, or to the next replica. It reports whether it
// moved (there is more than one endpoint).
//
// A leader the client was not given (a client that knows one replica of
// a replicated coordinator) is dialled, with the same credentials: in
// mutual TLS it must still prove the coordinator's identity.
func (c *Client) redirect(at int32, err error) bool {
	next := int32(-1)
	if hint := leaderHint(err); hint != "" {
		next = c.learn(hint)
	}
	if next < 0 {
		n := int32(len(c.endpoints()))
		if n < 2 {
			return false
		}
		next = (at + 1) % n
	}
	if next == at {
		return false
	}
	c.cur.CompareAndSwap(at, next)
	return true
}

// leaderHint returns the leader's address a replica's refusal names
// ("... leader at HOST:PORT"), or "".
func leaderHint(err error) string {
	const key = "leader at "
	msg := status.Convert(err).Message()
	i := strings.LastIndex(msg, key)
	if i < 0 {
		return ""
	}
	addr := msg[i+len(key):]
	if j := strings.IndexAny(addr, " ;,)"); j >= 0 {
		addr = addr[:j]
	}
	return addr
}

// Check asks the coordinator's health service once: it tells a
// coordinator that is up and accepts this client's credentials from one
// that is down, speaks TLS to a plaintext client, or refuses its
// certificate.
func (c *Client) Check(ctx context.Context) error {
	_, ep := c.endpoint()
	_, err := healthpb.NewHealthClient(ep.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// Close ends the streams (calls waiting on them fail) and closes the
// connection.
func (c *Client) Close() error {
	c.cancel()
	c.epMu.Lock()
	defer c.epMu.Unlock()
	var errs []error
	for _, e := range c.endpoints() {
		errs = append(errs, e.conn.Close())
	}
	return errors.Join(errs...)
}

// StreamsOpened returns how many SubmitStream streams were opened so far
// (more than Config.Streams means some broke and were replaced).
func (c *Client) StreamsOpened() uint64 { return c.streamsOpened.Load() }

// Retries returns how many attempts were repeated so far.
func (c *Client) Retries() uint64 { return c.retries.Load() }

// Crashes is there so that a Client can stand in for the embedded engine
// in `dtx run`; a remote coordinator's services report their own.
func (c *Client) Crashes() uint64 { return 0 }

// ErrRejected wraps the coordinator's refusal of an invalid request (not
// retried).
var ErrRejected = errors.New("client: request rejected")

// ErrDenied wraps the coordinator's refusal of a caller that is not
// authenticated, or whose identity may not make the call: final, never
// retried (the error keeps the gRPC status).
var ErrDenied = errors.New("client: not authorized")

// Submit runs a decoded purchase (sent in its binary form).
func (c *Client) Submit(ctx context.Context, req *purchase.Request) (twopc.Outcome, error) {
	op, err := req.MarshalBinary()
	if err != nil {
		return twopc.Outcome{}, err
	}
	return c.submit(ctx, &dtxv1.PurchaseRequest{Op: op})
}

// SubmitLine runs one JSON Lines request, validated by the coordinator.
func (c *Client) SubmitLine(ctx context.Context, line string) (twopc.Outcome, error) {
	return c.submit(ctx, &dtxv1.PurchaseRequest{JsonLine: line})
}

// SubmitTx runs a transaction with the given branches.
func (c *Client) SubmitTx(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	r := &dtxv1.TxRequest{TransactionId: tx}
	for _, b := range branches {
		r.Branches = append(r.Branches, &dtxv1.Branch{Participant: b.Node, Op: b.Op})
	}
	return c.call(ctx, func(ctx context.Context, ep *endpoint) (*dtxv1.TxOutcome, error) { return ep.api.SubmitTx(ctx, r) })
}

func (c *Client) submit(ctx context.Context, r *dtxv1.PurchaseRequest) (twopc.Outcome, error) {
	return c.callUntil(ctx, func(ctx context.Context, deadline time.Time, ep *endpoint) (*dtxv1.TxOutcome, error) {
		// A caller's span goes on a call of its own: a stream's metadata is
		// sent once, for every transaction on it.
		if c.cfg.Unary || ep.noStream.Load() || traced(ctx) {
			actx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			if traced(ctx) {
				actx = withTraceContext(actx)
			}
			return ep.api.Submit(actx, r)
		}
		s, err := c.getStream(ctx, ep)
		if err != nil {
			return nil, err
		}
		return s.submit(ctx, r, deadline)
	})
}

// call is callUntil for attempts that take a context with the attempt's
// deadline.
func (c *Client) call(ctx context.Context, f func(context.Context, *endpoint) (*dtxv1.TxOutcome, error)) (twopc.Outcome, error) {
	return c.callUntil(ctx, func(ctx context.Context, deadline time.Time, ep *endpoint) (*dtxv1.TxOutcome, error) {
		actx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		if traced(ctx) {
			actx = withTraceContext(actx)
		}
		return f(actx, ep)
	})
}

// callUntil retries f until it gets an outcome, a final error, or RetryFor
// (or ctx) runs out; f gets each attempt's deadline (CallTimeout, within
// RetryFor). A retried submission of the same id may find the first
// attempt's outcome, which the coordinator marks duplicate: after an
// attempt that may have reached the coordinator, that mark is dropped (it
// most likely is this client's own first attempt; a client cannot tell it
// from someone else's earlier submission of the same id).
func (c *Client) callUntil(ctx context.Context, f func(context.Context, time.Time, *endpoint) (*dtxv1.TxOutcome, error)) (twopc.Outcome, error) {
	giveUp := time.Now().Add(c.cfg.RetryFor)
	if d, ok := ctx.Deadline(); ok && d.Before(giveUp) {
		giveUp = d
	}
	ambiguous := false
	hops := 0 // attempts moved to another replica since the last backoff
	for attempt := 0; ; attempt++ {
		deadline := time.Now().Add(c.cfg.CallTimeout)
		if deadline.After(giveUp) {
			deadline = giveUp
		}
		at, ep := c.endpoint()
		out, err := f(ctx, deadline, ep)
		if err == nil {
			o := twopc.Outcome{Tx: out.GetTransactionId(), Committed: out.GetStatus() == dtxv1.Status_STATUS_COMMITTED,
				Reason: out.GetReason(), Duplicate: out.GetDuplicate() && !ambiguous}
			if s := out.GetStatus(); s != dtxv1.Status_STATUS_COMMITTED && s != dtxv1.Status_STATUS_ROLLED_BACK {
				return o, fmt.Errorf("client: unexpected status %v", s)
			}
			return o, nil
		}
		code := status.Code(err)
		switch code {
		case codes.InvalidArgument:
			return twopc.Outcome{}, fmt.Errorf("%w: %s", ErrRejected, status.Convert(err).Message())
		case codes.PermissionDenied, codes.Unauthenticated:
			return twopc.Outcome{}, fmt.Errorf("%w (nothing ran): %w", ErrDenied, status.Convert(err).Err())
		case codes.FailedPrecondition:
			if strings.Contains(status.Convert(err).Message(), "outcome expired") {
				return twopc.Outcome{}, fmt.Errorf("client: %w", twopc.ErrOutcomeExpired)
			}
			ambiguous = true
		case codes.ResourceExhausted: // refused before it started
		default:
			ambiguous = true
		}
		pause := c.backoff(attempt)
		if code == codes.Unavailable && c.redirect(at, err) && hops < len(c.endpoints()) {
			// Another replica leads (or this one is down): go there at
			// once, with the same id.
			hops++
			pause = time.Millisecond
			if leaderHint(err) == "" {
				pause = c.cfg.BackoffBase / 4
			}
		} else {
			hops = 0
		}
		if ctx.Err() != nil || time.Now().Add(pause).After(giveUp) {
			return twopc.Outcome{}, fmt.Errorf("client: no outcome (the transaction may still commit; ask again with the same id): %w", err)
		}
		c.retries.Add(1)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return twopc.Outcome{}, fmt.Errorf("client: no outcome (the transaction may still commit; ask again with the same id): %w", err)
		}
	}
}

func (c *Client) backoff(attempt int) time.Duration {
	d := min(c.cfg.BackoffBase<<min(attempt, 20), c.cfg.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Status is what the coordinator knows about a transaction.
type Status = dtxv1.Status

// Outcome asks the coordinator what it durably knows about tx, retrying
// across connection loss.
func (c *Client) Outcome(ctx context.Context, tx string) (Status, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RetryFor)
	defer cancel()
	for attempt := 0; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		at, ep := c.endpoint()
		out, err := ep.api.Outcome(actx, &dtxv1.OutcomeRequest{TransactionId: tx})
		acancel()
		if err == nil {
			return out.GetStatus(), out.GetReason(), nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument:
			return 0, "", fmt.Errorf("%w: %s", ErrRejected, status.Convert(err).Message())
		case codes.PermissionDenied, codes.Unauthenticated:
			return 0, "", fmt.Errorf("%w: %w", ErrDenied, err)
		case codes.FailedPrecondition:
			return 0, "", fmt.Errorf("client: %s: %w", status.Convert(err).Message(), twopc.ErrOutcomeExpired)
		}
		c.retries.Add(1)
		pause := c.backoff(attempt)
		if status.Code(err) == codes.Unavailable && c.redirect(at, err) && leaderHint(err) != "" {
			pause = time.Millisecond
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return 0, "", fmt.Errorf("client: outcome of %s: %w", tx, err)
		}
	}
}
