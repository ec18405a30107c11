package transport

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dtx-dev/dtx/twopc"
)

// Faults are the misbehaviours of an in-process MemNetwork, as probabilities
// per message (0 means never).
type Faults struct {
	Drop      float64       // lose the message
	Duplicate float64       // deliver it twice
	Delay     float64       // deliver it late (which also reorders it)
	MaxDelay  time.Duration // upper bound of a delay
}

// MemNetwork is an in-process network: each node registers an inbox channel
// and messages are delivered to it in batches. A full inbox or an
// unregistered (crashed) node loses the message, as a real network would.
type MemNetwork struct {
	mu     sync.RWMutex
	inbox  map[string]chan []twopc.Message
	faults Faults

	rmu sync.Mutex
	rng *rand.Rand

	sent, dropped, duplicated, delayed atomic.Uint64
}

// NewMemNetwork returns a network with the given faults; seed drives them.
func NewMemNetwork(f Faults, seed uint64) *MemNetwork {
	return &MemNetwork{
		inbox:  make(map[string]chan []twopc.Message),
		faults: f,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Register connects node id to inbox, replacing any earlier registration.
func (n *MemNetwork) Register(id string, inbox chan []twopc.Message) {
	n.mu.Lock()
	n.inbox[id] = inbox
	n.mu.Unlock()
}

// Unregister disconnects id if it is still connected to inbox: messages to
// it are lost from now on.
func (n *MemNetwork) Unregister(id string, inbox chan []twopc.Message) {
	n.mu.Lock()
	if n.inbox[id] == inbox {
		delete(n.inbox, id)
	}
	n.mu.Unlock()
}

// NetStats counts what the network did.
type NetStats struct {
	Sent, Dropped, Duplicated, Delayed uint64
}

// Stats returns the counters so far.
func (n *MemNetwork) Stats() NetStats {
	return NetStats{n.sent.Load(), n.dropped.Load(), n.duplicated.Load(), n.delayed.Load()}
}

// Send implements Transport. Messages to the same node travel as one batch.
func (n *MemNetwork) Send(msgs []twopc.Message) {
	if len(msgs) == 0 {
		return
	}
	n.sent.Add(uint64(len(msgs)))
	if n.faults == (Faults{}) {
		n.sendBatches(msgs)
		return
	}
	var now []twopc.Message
	for _, m := range msgs {
		drop, dup, delay := n.roll()
		switch {
		case drop:
			n.dropped.Add(1)
			continue
		case delay > 0:
			n.delayed.Add(1)
			m := m
			time.AfterFunc(delay, func() { n.deliver(m.To, []twopc.Message{m}) })
		default:
			now = append(now, m)
		}
		if dup {
			n.duplicated.Add(1)
			now = append(now, m)
		}
	}
	n.sendBatches(now)
}

func (n *MemNetwork) roll() (drop, dup bool, delay time.Duration) {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	f := n.faults
	drop = f.Drop > 0 && n.rng.Float64() < f.Drop
	dup = f.Duplicate > 0 && n.rng.Float64() < f.Duplicate
	if f.Delay > 0 && f.MaxDelay > 0 && n.rng.Float64() < f.Delay {
		delay = time.Duration(n.rng.Int64N(int64(f.MaxDelay))) + 1
	}
	return drop, dup, delay
}

// sendBatches delivers msgs grouped by destination, keeping their order.
func (n *MemNetwork) sendBatches(msgs []twopc.Message) { ByDestination(msgs, n.deliver) }

func (n *MemNetwork) deliver(to string, batch []twopc.Message) {
	n.mu.RLock()
	ch := n.inbox[to]
	n.mu.RUnlock()
	if ch == nil {
		n.dropped.Add(uint64(len(batch)))
		return
	}
	select {
	case ch <- batch:
	default:
		n.dropped.Add(uint64(len(batch)))
	}
}

var _ Network = (*MemNetwork)(nil)
