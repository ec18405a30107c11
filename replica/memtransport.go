package replica

import (
	"context"
	"fmt"
	"sync"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MemTransport connects replicas in one process (tests, the simulator):
// messages are copied and handed to the destination's Receive. A replica
// can be cut off from all others (Isolate), in both directions.
type MemTransport struct {
	mu       sync.Mutex
	replicas map[uint64]*Replica
	isolated map[uint64]bool
}

// NewMemTransport returns a transport with no replica on it.
func NewMemTransport() *MemTransport {
	return &MemTransport{replicas: map[uint64]*Replica{}, isolated: map[uint64]bool{}}
}

// Attach puts r on the transport (replacing an earlier replica with its id).
func (t *MemTransport) Attach(id uint64, r *Replica) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.replicas[id] = r
}

// Isolate cuts replica id off from every other (or reconnects it).
func (t *MemTransport) Isolate(id uint64, cut bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.isolated[id] = cut
}

// Send delivers each message to its destination, unless either end is
// isolated.
func (t *MemTransport) Send(msgs []*pb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		if t.isolated[m.GetFrom()] || t.isolated[m.GetTo()] {
			continue
		}
		if r := t.replicas[m.GetTo()]; r != nil {
			r.Receive(proto.Clone(m).(*pb.Message))
		}
	}
}

// FetchSnapshot reads replica from's snapshot file at index, unless either
// end is isolated (SnapshotFetcher).
func (t *MemTransport) FetchSnapshot(_ context.Context, from, index uint64) ([]byte, error) {
	t.mu.Lock()
	r := t.replicas[from]
	cut := t.isolated[from]
	t.mu.Unlock()
	if r == nil || cut {
		return nil, fmt.Errorf("replica %d unreachable", from)
	}
	return r.SnapshotFile(index)
}
