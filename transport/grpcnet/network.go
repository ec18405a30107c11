// Package grpcnet is the networked transport.Network: each node serves the
// dtx.v1.Transport gRPC service, and messages to another node travel in
// batches, one Deliver call per batch.
//
// Send never blocks the node loop: it appends the messages to a bounded
// queue per destination (dropping them when the queue is full — the
// protocol resends what matters) and returns. Sender goroutines per
// destination (Streams of them) take everything queued, up to MaxBatch
// messages, and send it as one call with a deadline; while calls are in
// flight new messages queue up, so the batches grow with the load
// (self-clocking batching). A failed call loses its batch and its sender
// backs off (exponential, with jitter) before the next; gRPC reconnects
// underneath. Nothing here ever invents a protocol message: a lost message
// is only ever lost.
package grpcnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
)

// Config configures a Network.
type Config struct {
	// Peers maps the node names this node sends to onto their addresses
	// (host:port). Messages to a node that is neither a peer nor registered
	// locally are dropped. A node served by several processes of which one
	// at a time takes its messages (the replicas of a replicated
	// coordinator) has a comma-separated list: its sender goes on with the
	// next address, or the one a refusal names (LeaderHint), when a call
	// fails.
	Peers map[string]string

	// CallTimeout bounds one Deliver call.
	CallTimeout time.Duration
	// QueueSize bounds the messages waiting for one destination; Send drops
	// messages beyond it.
	QueueSize int
	// MaxBatch bounds the messages of one call.
	MaxBatch int
	// Streams is the number of calls that may be in flight to one
	// destination at once (default 1). With 1, messages between two nodes
	// keep their order and batches are largest; with more, a message need
	// not wait for the call ahead of it (the protocol does not need the
	// order). On the 2-core test machine 1 measured better.
	Streams int
	// BackoffBase and BackoffMax bound the pause after a failed call
	// (doubling from the base, with jitter).
	BackoffBase, BackoffMax time.Duration
	// TLS, if set, is the client side of mutual TLS (a certificate and the
	// CA that signs the peers'). Nil means plaintext.
	TLS *tls.Config
	// PeerTLS, if set, returns the client TLS configuration for one peer
	// (TLS with a check of that peer's identity); it takes precedence
	// over TLS.
	PeerTLS func(peer string) *tls.Config
	// MaxMsgBytes bounds the encoded size of one call, sent or received.
	MaxMsgBytes int
	// InboxWait is how long Deliver waits for room in a full inbox before
	// it refuses the batch (RESOURCE_EXHAUSTED).
	InboxWait time.Duration
	// Authorize, if set, is asked about every message of a received batch
	// before any of it reaches an inbox, with the call's context (which
	// holds the peer's verified certificate under mutual TLS). An error
	// refuses the whole batch (PERMISSION_DENIED), counted in
	// Stats.Unauthorized; nothing of it is delivered.
	Authorize func(ctx context.Context, m *twopc.Message) error
	// OnCall, if set, sees every finished Deliver call this node made: the
	// destination, the number of messages, how long it took, and its error.
	OnCall func(to string, msgs int, took time.Duration, err error)
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		CallTimeout: 2 * time.Second,
		QueueSize:   1 << 16,
		MaxBatch:    4096,
		Streams:     1,
		BackoffBase: 20 * time.Millisecond,
		BackoffMax:  time.Second,
		MaxMsgBytes: 16 << 20,
		InboxWait:   100 * time.Millisecond,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.CallTimeout <= 0:
		return errors.New("grpcnet: CallTimeout must be > 0")
	case c.QueueSize <= 0 || c.MaxBatch <= 0 || c.Streams <= 0 || c.Streams > 64:
		return errors.New("grpcnet: QueueSize and MaxBatch must be > 0, Streams in 1..64")
	case c.BackoffBase <= 0 || c.BackoffMax < c.BackoffBase:
		return errors.New("grpcnet: need 0 < BackoffBase <= BackoffMax")
	case c.MaxMsgBytes < 1<<10:
		return errors.New("grpcnet: MaxMsgBytes must be at least 1 KiB")
	case c.InboxWait < 0:
		return errors.New("grpcnet: InboxWait must be >= 0")
	}
	for id, addr := range c.Peers {
		if id == "" || addr == "" {
			return fmt.Errorf("grpcnet: peer %q has no name or no address %q", id, addr)
		}
	}
	return nil
}

// Stats counts what a Network did.
type Stats struct {
	Calls      uint64 // Deliver calls made
	CallErrors uint64 // of which failed (their messages are lost)
	Sent       uint64 // messages carried by successful calls
	// TxCalls and TxSent count only the calls that carried protocol
	// messages about transactions (not only wait-for reports): TxSent /
	// TxCalls is the number of transaction messages per network call.
	TxCalls, TxSent uint64
	Local           uint64 // messages delivered in this process, without a call
	Dropped         uint64 // messages lost here: full queue, unknown node, failed call
	Received        uint64 // messages accepted from peers
	Refused         uint64 // messages refused: node down, inbox full, filtered, malformed, unauthorized
	// Unauthorized counts the batches refused because a message was not
	// allowed from its sender (Config.Authorize).
	Unauthorized uint64
}

// MessagesPerCall returns TxSent / TxCalls (0 before any call).
func (s Stats) MessagesPerCall() float64 {
	if s.TxCalls == 0 {
		return 0
	}
	return float64(s.TxSent) / float64(s.TxCalls)
}

// Network is a transport.Network over gRPC. It is both the client (Send)
// and, once RegisterService is called on a gRPC server, the server that
// delivers incoming batches into the registered inboxes.
type Network struct {
	dtxv1.UnimplementedTransportServer

	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.RWMutex
	inbox map[string]chan []twopc.Message

	filter     atomic.Pointer[func(*twopc.Message) bool]
	hint       atomic.Pointer[func(string) string]
	lastDenied atomic.Int64 // unix nanos of the last unauthorized batch logged

	smu     sync.Mutex
	senders map[string]*sender
	closed  bool

	st struct {
		calls, callErrors, sent, txCalls, txSent, local, dropped, received, refused, unauthorized atomic.Uint64
	}
}

var _ transport.Network = (*Network)(nil)

// New returns a network; nothing is dialled until the first Send to a peer.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Network{cfg: cfg, inbox: map[string]chan []twopc.Message{}, senders: map[string]*sender{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// Register connects node id (served by this process) to inbox.
func (n *Network) Register(id string, inbox chan []twopc.Message) {
	n.mu.Lock()
	n.inbox[id] = inbox
	n.mu.Unlock()
}

// Unregister disconnects id if it is still connected to inbox: batches for
// it are refused (UNAVAILABLE) from now on.
func (n *Network) Unregister(id string, inbox chan []twopc.Message) {
	n.mu.Lock()
	if n.inbox[id] == inbox {
		delete(n.inbox, id)
	}
	n.mu.Unlock()
}

// SetFilter installs f (nil removes it): an incoming message for which f
// returns false is refused. A server that is draining uses it to refuse new
// PREPAREs while it finishes the transactions it has.
func (n *Network) SetFilter(f func(*twopc.Message) bool) {
	if f == nil {
		n.filter.Store(nil)
		return
	}
	n.filter.Store(&f)
}

// SetHint installs f, which names the address where a node that is not
// served here is (the leading replica of a replicated coordinator): a
// batch for it is refused with that address in the error (LeaderHint),
// and a DeliverStream carrying it ends, so that the sender moves there.
func (n *Network) SetHint(f func(node string) string) { n.hint.Store(&f) }

// Stats returns the counters so far.
func (n *Network) Stats() Stats {
	return Stats{
		Calls: n.st.calls.Load(), CallErrors: n.st.callErrors.Load(), Sent: n.st.sent.Load(),
		TxCalls: n.st.txCalls.Load(), TxSent: n.st.txSent.Load(),
		Local: n.st.local.Load(), Dropped: n.st.dropped.Load(),
		Received: n.st.received.Load(), Refused: n.st.refused.Load(),
		Unauthorized: n.st.unauthorized.Load(),
	}
}

// Send implements transport.Transport: it queues msgs by destination and
// returns at once.
func (n *Network) Send(msgs []twopc.Message) { transport.ByDestination(msgs, n.sendTo) }

func (n *Network) sendTo(to string, group []twopc.Message) {
	n.mu.RLock()
	ch := n.inbox[to]
	n.mu.RUnlock()
	if ch != nil { // a node of this process
		select {
		case ch <- group:
			n.st.local.Add(uint64(len(group)))
		default:
			n.st.dropped.Add(uint64(len(group)))
		}
		return
	}
	s := n.sender(to)
	if s == nil {
		n.st.dropped.Add(uint64(len(group)))
		return
	}
	s.enqueue(group)
}

// sender returns the sender of a peer, starting it on first use; nil for
// an unknown node or a closed network.
func (n *Network) sender(to string) *sender {
	n.smu.Lock()
	defer n.smu.Unlock()
	if s := n.senders[to]; s != nil {
		return s
	}
	list, ok := n.cfg.Peers[to]
	if !ok || n.closed {
		return nil
	}
	s := &sender{n: n, to: to, wake: make(chan struct{}, 1)}
	for _, addr := range strings.Split(list, ",") {
		conn, err := grpc.NewClient(addr, n.dialOptions(to)...)
		if err != nil {
			n.cfg.Logger.Error("grpcnet: bad peer address", "peer", to, "addr", addr, "err", err)
			for _, c := range s.conns {
				c.Close()
			}
			return nil
		}
		s.addrs = append(s.addrs, addr)
		s.conns = append(s.conns, conn)
		s.clients = append(s.clients, dtxv1.NewTransportClient(conn))
	}
	n.senders[to] = s
	for range n.cfg.Streams {
		n.wg.Add(1)
		go s.run()
	}
	return s
}

func (n *Network) dialOptions(peer string) []grpc.DialOption {
	creds := insecure.NewCredentials()
	switch {
	case n.cfg.PeerTLS != nil:
		creds = credentials.NewTLS(n.cfg.PeerTLS(peer))
	case n.cfg.TLS != nil:
		creds = credentials.NewTLS(n.cfg.TLS)
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: n.cfg.BackoffMax},
			MinConnectTimeout: n.cfg.CallTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(n.cfg.MaxMsgBytes), grpc.MaxCallRecvMsgSize(n.cfg.MaxMsgBytes)),
	}
}

// ServerOptions returns the options a gRPC server needs to serve this
// network's peers (message size limit, keepalive policy).
func (n *Network) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(n.cfg.MaxMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
}

// RegisterService registers the Transport service on s.
func (n *Network) RegisterService(s grpc.ServiceRegistrar) { dtxv1.RegisterTransportServer(s, n) }

// Close stops the senders (queued messages are lost) and closes their
// connections. Registered inboxes stay until Unregister.
func (n *Network) Close() error {
	n.smu.Lock()
	if n.closed {
		n.smu.Unlock()
		return nil
	}
	n.closed = true
	n.smu.Unlock()
	n.cancel()
	n.wg.Wait()
	var errs []error
	for _, s := range n.senders {
		for _, c := range s.conns {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Deliver implements the Transport service: it hands the batch to the
// registered inbox of its destination, or refuses it whole.
func (n *Network) Deliver(ctx context.Context, b *dtxv1.Batch) (*dtxv1.DeliverReply, error) {
	in := b.GetMessages()
	if len(in) > n.cfg.MaxBatch {
		n.st.refused.Add(uint64(len(in)))
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d messages is over the limit of %d", len(in), n.cfg.MaxBatch)
	}
	msgs := make([]twopc.Message, 0, len(in))
	var filter func(*twopc.Message) bool
	if f := n.filter.Load(); f != nil {
		filter = *f
	}
	for i, p := range in {
		m, err := FromProto(p)
		if err != nil {
			n.st.refused.Add(uint64(len(in)))
			return nil, status.Errorf(codes.InvalidArgument, "message %d: %v", i, err)
		}
		if n.cfg.Authorize != nil {
			if err := n.cfg.Authorize(ctx, &m); err != nil {
				n.st.refused.Add(uint64(len(in)))
				n.st.unauthorized.Add(1)
				n.noteDenied(err)
				return nil, status.Errorf(codes.PermissionDenied, "message %d: %v", i, err)
			}
		}
		if filter != nil && !filter(&m) {
			n.st.refused.Add(1)
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return &dtxv1.DeliverReply{}, nil
	}
	to := msgs[0].To
	for i := range msgs {
		if msgs[i].To != to {
			n.st.refused.Add(uint64(len(msgs)))
			return nil, status.Errorf(codes.InvalidArgument, "one batch for two nodes (%s and %s)", to, msgs[i].To)
		}
	}
	n.mu.RLock()
	ch := n.inbox[to]
	n.mu.RUnlock()
	if ch == nil {
		n.st.refused.Add(uint64(len(msgs)))
		if h := n.hint.Load(); h != nil {
			if addr := (*h)(to); addr != "" {
				return nil, status.Errorf(codes.Unavailable, "node %s is not serving here; %s%s", to, hintKey, addr)
			}
		}
		return nil, status.Errorf(codes.Unavailable, "node %s is not serving here", to)
	}
	select {
	case ch <- msgs:
	default:
		t := time.NewTimer(n.cfg.InboxWait)
		defer t.Stop()
		select {
		case ch <- msgs:
		case <-t.C:
			n.st.refused.Add(uint64(len(msgs)))
			return nil, status.Errorf(codes.ResourceExhausted, "node %s: inbox full", to)
		case <-ctx.Done():
			n.st.refused.Add(uint64(len(msgs)))
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	n.st.received.Add(uint64(len(msgs)))
	return &dtxv1.DeliverReply{Accepted: uint32(len(msgs))}, nil
}

// noteDenied logs a refused batch, at most once a second (a flood must not
// become a flood of log lines).
func (n *Network) noteDenied(err error) {
	now := time.Now().UnixNano()
	last := n.lastDenied.Load()
	if now-last < int64(time.Second) || !n.lastDenied.CompareAndSwap(last, now) {
		return
	}
	n.cfg.Logger.Warn("grpcnet: refused a batch from an unauthorized sender", "err", err, "refused_batches", n.st.unauthorized.Load())
}

// DeliverStream implements the Transport service: every batch of the
// stream is delivered as by Deliver; a refused one is lost (counted in the
// receiver's stats) and the stream goes on.
func (n *Network) DeliverStream(st dtxv1.Transport_DeliverStreamServer) error {
	var accepted uint32
	for {
		b, err := st.Recv()
		if err == io.EOF {
			return st.SendAndClose(&dtxv1.DeliverReply{Accepted: accepted})
		}
		if err != nil {
			return err
		}
		if r, err := n.Deliver(st.Context(), b); err == nil {
			accepted += r.Accepted
		} else if st.Context().Err() != nil {
			return status.FromContextError(st.Context().Err()).Err()
		} else if n.hint.Load() != nil && status.Code(err) == codes.Unavailable {
			// The node is served elsewhere now (another replica leads):
			// end the stream, so that the sender hears it and moves on.
			return err
		}
	}
}

// sender sends one destination's queue, one batch per stream message (or
// per call, to a peer without DeliverStream), from Streams goroutines.
type sender struct {
	n       *Network
	to      string
	addrs   []string // one, or the replicas of the destination
	conns   []*grpc.ClientConn
	clients []dtxv1.TransportClient
	cur     atomic.Int32 // index of the address in use
	wake    chan struct{}
	unary   atomic.Bool // the peer has no DeliverStream: one call per batch

	mu sync.Mutex
	q  []twopc.Message
}

func (s *sender) enqueue(msgs []twopc.Message) {
	s.mu.Lock()
	room := s.n.cfg.QueueSize - len(s.q)
	take := min(room, len(msgs))
	if take > 0 {
		s.q = append(s.q, msgs[:take]...)
	}
	s.mu.Unlock()
	if lost := len(msgs) - max(take, 0); lost > 0 {
		s.n.st.dropped.Add(uint64(lost))
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sender) take() []twopc.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := min(len(s.q), s.n.cfg.MaxBatch)
	if k == 0 {
		return nil
	}
	batch := s.q[:k:k]
	if k == len(s.q) {
		s.q = nil
	} else {
		s.q = s.q[k:]
	}
	return batch
}

func (s *sender) run() {
	defer s.n.wg.Done()
	ctx := s.n.ctx
	failures := 0
	var pb dtxv1.Batch
	var stream dtxv1.Transport_DeliverStreamClient // this goroutine's; nil until needed
	streamAt := int32(-1)                          // the address stream goes to
	defer func() {
		if stream != nil {
			stream.CloseSend()
		}
	}()
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		for {
			batch := s.take()
			if len(batch) == 0 {
				break
			}
			if at := s.cur.Load(); at != streamAt {
				if stream != nil {
					stream.CloseSend()
					stream = nil
				}
				streamAt = at
			}
			err := s.call(ctx, &pb, batch, &stream)
			if err == nil {
				failures = 0
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if len(s.addrs) > 1 {
				s.redirect(streamAt, err)
				if failures < len(s.addrs) {
					failures++
					continue // another replica, at once
				}
			}
			failures++
			if failures == 1 || failures%50 == 0 {
				s.n.cfg.Logger.Warn("grpcnet: call failed; backing off", "peer", s.to, "messages", len(batch), "failures", failures, "err", err)
			}
			select {
			case <-time.After(s.backoff(failures)):
			case <-ctx.Done():
				return
			}
		}
	}
}

// deliver sends one batch: on this goroutine's stream to the peer, opened
// if needed, or by a Deliver call to a peer without DeliverStream. A stream
// that fails is dropped (the batch with it: the protocol resends what
// matters) and the next batch opens a new one.
func (s *sender) deliver(ctx context.Context, pb *dtxv1.Batch, stream *dtxv1.Transport_DeliverStreamClient) error {
	client := s.clients[s.cur.Load()]
	if !s.unary.Load() {
		if *stream == nil {
			st, err := client.DeliverStream(ctx)
			if err != nil {
				return err
			}
			*stream = st
		}
		err := (*stream).Send(pb)
		if err == nil {
			return nil
		}
		// The stream is broken; its status says why (Send itself says io.EOF).
		_, rerr := (*stream).CloseAndRecv()
		*stream = nil
		if status.Code(rerr) == codes.Unimplemented {
			s.unary.Store(true)
			s.n.cfg.Logger.Info("grpcnet: peer has no DeliverStream; one call per batch", "peer", s.to)
		} else {
			if rerr == nil || rerr == io.EOF {
				rerr = err
			}
			return rerr
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.n.cfg.CallTimeout)
	defer cancel()
	_, err := client.Deliver(ctx, pb)
	return err
}

// hintKey marks the address of the node's leading replica in a refusal.
const hintKey = "leader at "

// LeaderHint returns the address a refusal names as the leader's (after
// "leader at "), or "".
func LeaderHint(err error) string {
	msg := status.Convert(err).Message()
	i := strings.LastIndex(msg, hintKey)
	if i < 0 {
		return ""
	}
	addr := msg[i+len(hintKey):]
	if j := strings.IndexAny(addr, " ;,)"); j >= 0 {
		addr = addr[:j]
	}
	return addr
}

// redirect moves the sender off the address at (whose call failed with
// err) to the one err names, or the next.
func (s *sender) redirect(at int32, err error) {
	next := (at + 1) % int32(len(s.addrs))
	if hint := LeaderHint(err); hint != "" {
		for i, a := range s.addrs {
			if a == hint {
				next = int32(i)
			}
		}
	}
	s.cur.CompareAndSwap(at, next)
}

func (s *sender) backoff(failures int) time.Duration {
	d := s.n.cfg.BackoffBase << min(failures-1, 20)
	d = min(d, s.n.cfg.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) // jitter: [d/2, d]
}

func (s *sender) call(ctx context.Context, pb *dtxv1.Batch, batch []twopc.Message, stream *dtxv1.Transport_DeliverStreamClient) error {
	pb.Messages = pb.Messages[:0]
	txMsgs := 0
	for i := range batch {
		pb.Messages = append(pb.Messages, ToProto(&batch[i]))
		if batch[i].Tx != "" {
			txMsgs++
		}
	}
	start := time.Now()
	err := s.deliver(ctx, pb, stream)
	took := time.Since(start)
	st := &s.n.st
	st.calls.Add(1)
	if err != nil {
		st.callErrors.Add(1)
		st.dropped.Add(uint64(len(batch)))
	} else {
		st.sent.Add(uint64(len(batch)))
		if txMsgs > 0 {
			st.txCalls.Add(1)
			st.txSent.Add(uint64(txMsgs))
		}
	}
	if s.n.cfg.OnCall != nil {
		s.n.cfg.OnCall(s.to, len(batch), took, err)
	}
	return err
}
