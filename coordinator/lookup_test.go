package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// fakeParticipant votes YES to every PREPARE except for transactions whose
// id starts with "silent", and ACKs every COMMIT.
func fakeParticipant(ctx context.Context, net *transport.MemNetwork, id string) {
	inbox := make(chan []twopc.Message, 64)
	net.Register(id, inbox)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case batch := <-inbox:
				var out []twopc.Message
				for _, m := range batch {
					reply := twopc.Message{From: id, To: m.From, Tx: m.Tx, Epoch: m.Epoch}
					switch {
					case m.Type == twopc.MsgPrepare && !strings.HasPrefix(m.Tx, "silent"):
						reply.Type, reply.Vote = twopc.MsgVote, twopc.VoteYes
					case m.Type == twopc.MsgCommit:
						reply.Type = twopc.MsgAck
					default:
						continue
					}
					out = append(out, reply)
				}
				net.Send(out)
			}
		}
	}()
}

func TestLookup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	c, err := coordinator.Open(coordinator.Config{Dir: t.TempDir(), Machine: mc, Tick: time.Millisecond, Network: net, Log: wal.DefaultConfig("")})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	defer c.Close()

	if k, _, err := c.Lookup(ctx, "t1"); err != nil || k != coordinator.KnownUnknown {
		t.Fatalf("unknown: %v %v", k, err)
	}
	if o, err := c.Submit(ctx, "t1", []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil || !o.Committed {
		t.Fatalf("submit: %v %v", o, err)
	}
	if k, o, err := c.Lookup(ctx, "t1"); err != nil || k != coordinator.KnownDecided || !o.Committed {
		t.Fatalf("committed: %v %v %v", k, o, err)
	}

	// A transaction whose participant does not vote is pending, then
	// rolled back by the prepare timeout.
	res := make(chan twopc.Outcome, 1)
	go func() {
		o, _ := c.Submit(ctx, "silent1", []twopc.Branch{{Node: "p1"}})
		res <- o
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k, _, err := c.Lookup(ctx, "silent1")
		if err != nil {
			t.Fatal(err)
		}
		if k == coordinator.KnownPending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never pending: %v", k)
		}
		time.Sleep(time.Millisecond)
	}
	<-res
	k, o, err := c.Lookup(ctx, "silent1")
	if err != nil || k != coordinator.KnownDecided || o.Committed || !strings.Contains(o.Reason, "prepare timeout") {
		t.Fatalf("rolled back: %v %+v %v", k, o, err)
	}
}

// TestLookupExpired: past the retention window Lookup says the outcome
// expired (never unknown, which would read as "never ran"); a window
// later the id is unknown. The order is decided, expired, unknown.
func TestLookupExpired(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	fakeParticipant(ctx, net, "p1")
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 200
	mc.Retention = 20 // ticks of 1ms
	c, err := coordinator.Open(coordinator.Config{Dir: t.TempDir(), Machine: mc, Tick: time.Millisecond, Network: net, Log: wal.DefaultConfig("")})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	defer c.Close()
	if o, err := c.Submit(ctx, "t1", []twopc.Branch{{Node: "p1", Op: []byte("x")}}); err != nil || !o.Committed {
		t.Fatalf("submit: %v %v", o, err)
	}
	var seen []coordinator.Known
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) == 0 || seen[len(seen)-1] != coordinator.KnownUnknown {
		k, _, err := c.Lookup(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != k {
			seen = append(seen, k)
		}
		if time.Now().After(deadline) {
			t.Fatalf("t1 never forgotten: %v", seen)
		}
		time.Sleep(time.Millisecond)
	}
	want := []coordinator.Known{coordinator.KnownDecided, coordinator.KnownExpired, coordinator.KnownUnknown}
	if len(seen) != len(want) || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Fatalf("Lookup of t1 went through %v, want %v (decided, expired, unknown)", seen, want)
	}
}
