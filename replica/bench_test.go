package replica

import (
	"context"
	stdnet "net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// BenchmarkGroupAppend measures one replicated append (a Ready's records
// committed by the group and applied), one at a time, three replicas in
// this process with their raft logs on disk (fsync on).
func BenchmarkGroupAppend(b *testing.B) {
	dir := b.TempDir()
	rt := NewMemTransport()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	ids := []uint64{1, 2, 3}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reps []*Replica
	for _, id := range ids {
		lc := wal.DefaultConfig(filepath.Join(dir, strconv.FormatUint(id, 10)))
		mc := twopc.DefaultCoordinatorConfig()
		r, err := New(Config{ID: id, Peers: ids, Log: lc, Transport: rt, Tick: 5 * time.Millisecond,
			Coordinator: coordinatorConfig(mc, net)})
		if err != nil {
			b.Fatal(err)
		}
		rt.Attach(id, r)
		reps = append(reps, r)
		go r.Run(ctx)
	}
	var lead *Replica
	for lead == nil {
		for _, r := range reps {
			if r.Status().Serving {
				lead = r
			}
		}
		time.Sleep(time.Millisecond)
	}
	lead.mu.Lock()
	run := lead.mu.run
	lead.mu.Unlock()
	l := lead.newLog(run)
	e := []wal.Entry{event(string(make([]byte, 100)))} // a valid record: every replica applies it
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Append(e...); err != nil {
			b.Fatal(err)
		}
	}
}

func coordinatorConfig(mc twopc.CoordinatorConfig, net transport.Network) coordinator.Config {
	return coordinator.Config{Machine: mc, Tick: time.Millisecond, Network: net}
}

// BenchmarkGroupAppendGRPC is BenchmarkGroupAppend with the replicas
// talking over loopback gRPC (Net, plaintext).
func BenchmarkGroupAppendGRPC(b *testing.B) {
	dir := b.TempDir()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	ids := []uint64{1, 2, 3}
	addrs := map[uint64]string{}
	var lis []stdnet.Listener
	for _, id := range ids {
		l, err := stdnet.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		lis = append(lis, l)
		addrs[id] = l.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	var reps []*Replica
	for i, id := range ids {
		rn, err := NewNet(id, addrs, dial, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer rn.Close()
		lc := wal.DefaultConfig(filepath.Join(dir, strconv.FormatUint(id, 10)))
		r, err := New(Config{ID: id, Peers: ids, Log: lc, Transport: rn, Tick: 10 * time.Millisecond,
			Coordinator: coordinatorConfig(twopc.DefaultCoordinatorConfig(), net)})
		if err != nil {
			b.Fatal(err)
		}
		rn.SetReplica(r)
		srv := grpc.NewServer()
		dtxv1.RegisterRaftServer(srv, rn.Server())
		go srv.Serve(lis[i])
		defer srv.Stop()
		reps = append(reps, r)
		go r.Run(ctx)
	}
	var lead *Replica
	for lead == nil {
		for _, r := range reps {
			if r.Status().Serving {
				lead = r
			}
		}
		time.Sleep(time.Millisecond)
	}
	lead.mu.Lock()
	run := lead.mu.run
	lead.mu.Unlock()
	l := lead.newLog(run)
	e := []wal.Entry{event(string(make([]byte, 100)))} // a valid record: every replica applies it
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Append(e...); err != nil {
			b.Fatal(err)
		}
	}
}
