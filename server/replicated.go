package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/replica"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// RaftDir is where a coordinator replica keeps its raft log in its data
// directory (apart from a single coordinator's log, whose records it
// could not read).
func RaftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }

// notLeader is a replica's refusal: it does not lead (or has not restored
// its coordinator yet). Its message names the leader's gRPC address when
// known, in the form grpcnet.LeaderHint and the client library read.
type notLeader struct {
	id, leader uint64
	addr       string
}

func (e *notLeader) Error() string {
	if e.addr == "" {
		return fmt.Sprintf("coordinator replica %d is not the leader and knows none yet; retry with the same transaction_id", e.id)
	}
	return fmt.Sprintf("coordinator replica %d is not the leader; retry with the same transaction_id at the leader at %s", e.id, e.addr)
}

// replicaBackend serves the client API from one replica of a replicated
// coordinator: the leader's coordinator answers; any other replica refuses
// with the leader's address.
type replicaBackend struct {
	c      *Coordinator
	r      *replica.Replica
	net    *replica.Net
	cancel context.CancelFunc
	ctx    context.Context
}

func startReplica(c *Coordinator, cc coordinator.Config, logCfg wal.Config) (*replicaBackend, error) {
	cfg := c.cfg
	if _, ok := cfg.Replicas[cfg.ReplicaID]; !ok {
		return nil, fmt.Errorf("server: replica id %d has no address in the replicas %v", cfg.ReplicaID, cfg.Replicas)
	}
	peers := make([]uint64, 0, len(cfg.Replicas))
	for id := range cfg.Replicas {
		peers = append(peers, id)
	}
	slices.Sort(peers)
	b := c.base
	dial := func(addr string) (*grpc.ClientConn, error) {
		creds := insecure.NewCredentials()
		if b.tlsCli != nil {
			creds = credentials.NewTLS(auth.ExpectServer(b.tlsCli, auth.Coordinator))
		}
		return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	}
	rnet, err := replica.NewNet(cfg.ReplicaID, cfg.Replicas, dial, b.log)
	if err != nil {
		return nil, err
	}
	lc := logCfg
	lc.Dir = RaftDir(cfg.DataDir)
	r, err := replica.New(replica.Config{
		ID: cfg.ReplicaID, Peers: peers, Log: lc, Coordinator: cc, Transport: rnet,
		Tick: cfg.RaftTick, ElectionTicks: cfg.ElectionTicks, Logger: b.log,
	})
	if err != nil {
		rnet.Close()
		return nil, err
	}
	rnet.SetReplica(r)
	dtxv1.RegisterRaftServer(b.grpc, rnet.Server())
	// A follower refuses protocol messages for the coordinator with the
	// leader's address, so that participants move to it.
	rb := &replicaBackend{c: c, r: r, net: rnet}
	b.net.SetHint(func(node string) string {
		if node != b.cfg.ID {
			return ""
		}
		return rb.leaderAddr(r.Status().Lead)
	})
	rb.ctx, rb.cancel = context.WithCancel(context.Background())
	return rb, nil
}

func (rb *replicaBackend) run() error {
	err := rb.r.Run(rb.ctx)
	rb.net.Close()
	if err == nil && rb.ctx.Err() == nil {
		err = errors.New("replica stopped")
	}
	return err
}

// walLog is the replica's raft log (its dtx_wal_* metrics).
func (rb *replicaBackend) walLog() *wal.Log { return rb.r.RaftLog() }

func (rb *replicaBackend) leaderAddr(lead uint64) string {
	if lead == 0 {
		return ""
	}
	return rb.c.cfg.Replicas[lead]
}

// wrap turns a replica's NotLeaderError (or a coordinator that stopped
// because its leadership ended) into a refusal naming the leader.
func (rb *replicaBackend) wrap(err error) error {
	var nle *replica.NotLeaderError
	if errors.As(err, &nle) || errors.Is(err, coordinator.ErrClosed) || errors.Is(err, replica.ErrStopped) {
		lead := rb.r.Status().Lead
		if lead == rb.c.cfg.ReplicaID && !rb.r.Status().Serving {
			lead = 0
		}
		return &notLeader{id: rb.c.cfg.ReplicaID, leader: lead, addr: rb.leaderAddr(lead)}
	}
	return err
}

// coordinator waits briefly for the leader's coordinator (a new leader
// restoring its machine), or refuses.
func (rb *replicaBackend) coordinator(ctx context.Context) (*coordinator.Coordinator, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := rb.r.Coordinator(ctx)
	if err != nil {
		return nil, rb.wrap(err)
	}
	return c, nil
}

func (rb *replicaBackend) Submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	c, err := rb.coordinator(ctx)
	if err != nil {
		return twopc.Outcome{}, err
	}
	o, err := c.Submit(ctx, tx, branches)
	return o, rb.wrap(err)
}

func (rb *replicaBackend) SubmitAsync(ps []coordinator.Proposal, done func(i int, o twopc.Outcome, err error)) {
	c, err := rb.coordinator(context.Background())
	if err != nil {
		for i := range ps {
			done(i, twopc.Outcome{}, err)
		}
		return
	}
	c.SubmitAsync(ps, func(i int, o twopc.Outcome, err error) { done(i, o, rb.wrap(err)) })
}

// Lookup answers only as the leader, once raft's ReadIndex confirmed the
// leadership: never from a deposed leader's stale view.
func (rb *replicaBackend) Lookup(ctx context.Context, tx string) (coordinator.Known, twopc.Outcome, error) {
	k, o, err := rb.r.Lookup(ctx, tx)
	return k, o, rb.wrap(err)
}

func (rb *replicaBackend) Status(ctx context.Context) (coordinator.Status, error) {
	st := rb.r.Status()
	if !st.Serving {
		return coordinator.Status{}, rb.wrap(&replica.NotLeaderError{ID: st.ID, Leader: st.Lead})
	}
	c, err := rb.coordinator(ctx)
	if err != nil {
		return coordinator.Status{}, err
	}
	s, err := c.Status(ctx)
	return s, rb.wrap(err)
}

func (rb *replicaBackend) Done() <-chan struct{} { return rb.r.Done() }

// The operator's view is the leader's: a follower refuses, naming it.

func (rb *replicaBackend) Transactions(ctx context.Context, limit int) ([]twopc.TxInfo, int, int, error) {
	c, err := rb.coordinator(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	txs, n, d, err := c.Transactions(ctx, limit)
	return txs, n, d, rb.wrap(err)
}

func (rb *replicaBackend) WaitGraph(ctx context.Context) ([]twopc.WaitEdge, error) {
	c, err := rb.coordinator(ctx)
	if err != nil {
		return nil, err
	}
	g, err := c.WaitGraph(ctx)
	return g, rb.wrap(err)
}

func (rb *replicaBackend) Retry(ctx context.Context, tx string) ([]string, error) {
	c, err := rb.coordinator(ctx)
	if err != nil {
		return nil, err
	}
	sent, err := c.Retry(ctx, tx)
	return sent, rb.wrap(err)
}

// Records reads this replica's raft log: every replica holds the
// coordinator's records, so any of them answers a timeline.
func (rb *replicaBackend) Records(tx string, fn func(seq uint64, r twopc.Record)) error {
	return rb.r.Records(tx, fn)
}

func (rb *replicaBackend) Close() error {
	rb.cancel()
	<-rb.r.Done()
	return nil
}

func (rb *replicaBackend) status() *deploy.ReplicaStatus {
	st := rb.r.Status()
	return &deploy.ReplicaStatus{ID: st.ID, State: st.State, Term: st.Term, Leader: st.Lead, Applied: st.Applied,
		Commit: st.Commit, Serving: st.Serving, Compacted: st.Compacted}
}
