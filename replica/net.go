package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/api/dtxv1"
)

// Net is the replicas' transport over gRPC (the dtx.v1.Raft service): one
// queue and one sender goroutine per peer, which sends everything queued
// as one Send call (one in flight per peer, so batches grow with the
// load). A full queue or a failed call loses its messages: raft resends.
// Who may call Send is the server's guard's business (the coordinator
// identity only); Net checks that each message is for this replica.
type Net struct {
	self   uint64
	dial   func(addr string) (*grpc.ClientConn, error)
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	r       *Replica
	senders map[uint64]*raftSender
}

// NewNet returns the transport of replica self to peers (id → gRPC
// address, self excluded or not), dialled with dial.
func NewNet(self uint64, peers map[uint64]string, dial func(addr string) (*grpc.ClientConn, error), log *slog.Logger) (*Net, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Net{self: self, dial: dial, log: log, senders: map[uint64]*raftSender{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for id, addr := range peers {
		if id == self {
			continue
		}
		conn, err := dial(addr)
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("replica: peer %d at %s: %w", id, addr, err)
		}
		s := &raftSender{n: n, to: id, addr: addr, conn: conn, client: dtxv1.NewRaftClient(conn), wake: make(chan struct{}, 1)}
		n.senders[id] = s
		n.wg.Add(1)
		go s.run()
	}
	return n, nil
}

// SetReplica names the replica that received messages go to.
func (n *Net) SetReplica(r *Replica) {
	n.mu.Lock()
	n.r = r
	n.mu.Unlock()
}

// Send queues each message for its destination.
func (n *Net) Send(msgs []*pb.Message) {
	for _, m := range msgs {
		if s := n.senders[m.GetTo()]; s != nil {
			s.enqueue(m)
		}
	}
}

// Close stops the senders and closes their connections.
func (n *Net) Close() error {
	n.cancel()
	n.wg.Wait()
	var errs []error
	for _, s := range n.senders {
		errs = append(errs, s.conn.Close())
	}
	return errors.Join(errs...)
}

// Server returns the dtx.v1.Raft service of this replica.
func (n *Net) Server() dtxv1.RaftServer { return raftServer{n: n} }

type raftServer struct {
	dtxv1.UnimplementedRaftServer
	n *Net
}

// maxRaftBatch bounds the messages of one Send call.
const maxRaftBatch = 4096

func (s raftServer) Send(ctx context.Context, b *dtxv1.RaftBatch) (*dtxv1.RaftReply, error) {
	if err := s.deliver(b); err != nil {
		return nil, err
	}
	return &dtxv1.RaftReply{}, nil
}

// SendStream delivers every batch of the stream as Send does; a bad batch
// ends the stream.
func (s raftServer) SendStream(st grpc.ClientStreamingServer[dtxv1.RaftBatch, dtxv1.RaftReply]) error {
	s.n.mu.Lock()
	r := s.n.r
	s.n.mu.Unlock()
	if r == nil {
		return status.Error(codes.Unavailable, "replica not running")
	}
	errc := make(chan error, 1)
	go func() {
		for {
			b, err := st.Recv()
			if err == io.EOF {
				errc <- st.SendAndClose(&dtxv1.RaftReply{})
				return
			}
			if err == nil {
				err = s.deliver(b)
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	// A stopped replica ends its peers' streams at once, so that a
	// graceful stop of its server does not wait for them.
	select {
	case err := <-errc:
		return err
	case <-r.Done():
		return status.Error(codes.Unavailable, "replica stopped")
	}
}

func (s raftServer) deliver(b *dtxv1.RaftBatch) error {
	if len(b.GetMessages()) > maxRaftBatch {
		return status.Errorf(codes.InvalidArgument, "batch of %d raft messages is over the limit of %d", len(b.GetMessages()), maxRaftBatch)
	}
	s.n.mu.Lock()
	r := s.n.r
	s.n.mu.Unlock()
	if r == nil {
		return status.Error(codes.Unavailable, "replica not running")
	}
	msgs := make([]*pb.Message, 0, len(b.GetMessages()))
	for i, data := range b.GetMessages() {
		m := &pb.Message{}
		if err := proto.Unmarshal(data, m); err != nil {
			return status.Errorf(codes.InvalidArgument, "raft message %d: %v", i, err)
		}
		if m.GetTo() != s.n.self {
			return status.Errorf(codes.InvalidArgument, "raft message %d is for replica %d, not %d", i, m.GetTo(), s.n.self)
		}
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		r.Receive(m)
	}
	return nil
}

// snapshotChunk is the size of the pieces a snapshot is streamed in.
const snapshotChunk = 1 << 20

// Snapshot streams this replica's snapshot file at the index asked for.
func (s raftServer) Snapshot(req *dtxv1.RaftSnapshotRequest, st grpc.ServerStreamingServer[dtxv1.RaftSnapshotChunk]) error {
	s.n.mu.Lock()
	r := s.n.r
	s.n.mu.Unlock()
	if r == nil {
		return status.Error(codes.Unavailable, "replica not running")
	}
	data, err := r.SnapshotFile(req.GetIndex())
	if err != nil {
		return status.Errorf(codes.NotFound, "%v", err)
	}
	for len(data) > 0 {
		k := min(len(data), snapshotChunk)
		if err := st.Send(&dtxv1.RaftSnapshotChunk{Data: data[:k]}); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

// FetchSnapshot fetches replica from's snapshot file at index
// (SnapshotFetcher).
func (n *Net) FetchSnapshot(ctx context.Context, from, index uint64) ([]byte, error) {
	s := n.senders[from]
	if s == nil {
		return nil, fmt.Errorf("replica: no peer %d", from)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	st, err := s.client.Snapshot(ctx, &dtxv1.RaftSnapshotRequest{Index: index})
	if err != nil {
		return nil, fmt.Errorf("replica: fetch snapshot %d from peer %d: %w", index, from, err)
	}
	var data []byte
	for {
		c, err := st.Recv()
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, fmt.Errorf("replica: fetch snapshot %d from peer %d: %w", index, from, err)
		}
		data = append(data, c.GetData()...)
	}
}

type raftSender struct {
	n      *Net
	to     uint64
	addr   string
	conn   *grpc.ClientConn
	client dtxv1.RaftClient
	wake   chan struct{}

	mu sync.Mutex
	q  [][]byte
}

// raftQueue bounds the messages waiting for one peer.
const raftQueue = 8192

func (s *raftSender) enqueue(m *pb.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		return
	}
	s.mu.Lock()
	if len(s.q) < raftQueue {
		s.q = append(s.q, b)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *raftSender) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := min(len(s.q), maxRaftBatch)
	out := s.q[:k:k]
	s.q = s.q[k:]
	if len(s.q) == 0 {
		s.q = nil
	}
	return out
}

// send sends one batch on the stream to the peer, opening it if needed;
// a broken stream is dropped with its batch (raft resends).
func (s *raftSender) send(stream *grpc.ClientStreamingClient[dtxv1.RaftBatch, dtxv1.RaftReply], batch [][]byte) error {
	if *stream == nil {
		st, err := s.client.SendStream(s.n.ctx)
		if err != nil {
			return err
		}
		*stream = st
	}
	if err := (*stream).Send(&dtxv1.RaftBatch{Messages: batch}); err != nil {
		_, rerr := (*stream).CloseAndRecv()
		*stream = nil
		if rerr != nil && rerr != io.EOF {
			return rerr
		}
		return err
	}
	return nil
}

func (s *raftSender) run() {
	defer s.n.wg.Done()
	var stream grpc.ClientStreamingClient[dtxv1.RaftBatch, dtxv1.RaftReply]
	defer func() {
		if stream != nil {
			stream.CloseSend()
		}
	}()
	failures := 0
	for {
		select {
		case <-s.wake:
		case <-s.n.ctx.Done():
			return
		}
		for {
			batch := s.take()
			if len(batch) == 0 {
				break
			}
			err := s.send(&stream, batch)
			if err == nil {
				failures = 0
				continue
			}
			if s.n.ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%100 == 0 {
				s.n.log.Warn("replica: raft call failed", "peer", s.to, "addr", s.addr, "failures", failures, "err", err)
			}
			select {
			case <-time.After(min(time.Duration(failures)*10*time.Millisecond, 200*time.Millisecond)):
			case <-s.n.ctx.Done():
				return
			}
		}
	}
}
