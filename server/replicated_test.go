package server_test

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

// replicated is a cluster whose coordinator is three replicas.
type replicated struct {
	*cluster
	addrs, https map[uint64]string
	reps         map[uint64]*server.Coordinator
}

func (r *replicated) startReplica(id uint64) {
	r.t.Helper()
	cm := r.common(twopc.CoordinatorID)
	cm.Listen, cm.HTTP = r.addrs[id], r.https[id]
	cm.DataDir = filepath.Join(r.dir, fmt.Sprintf("coordinator-%d", id))
	co, err := server.StartCoordinator(server.CoordinatorConfig{Common: cm, Participants: engine.Services, Protocol: r.protocol,
		ReplicaID: id, Replicas: r.addrs, RaftTick: 10 * time.Millisecond, ElectionTicks: 10})
	if err != nil {
		r.t.Fatal(err)
	}
	r.reps[id] = co
}

// leader waits for the replica that serves as the leader.
func (r *replicated) leader() uint64 {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for id, co := range r.reps {
			var st deploy.CoordStatus
			if err := r.web.Get(context.Background(), r.https[id], "/v1/status", &st); err == nil && st.Replica != nil && st.Replica.Serving {
				_ = co
				return id
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatal("no leader after 20s")
	return 0
}

func newReplicated(t *testing.T) *replicated {
	return newReplicatedWith(t, nil)
}

// newReplicatedWith starts the cluster after tune changed its protocol.
func newReplicatedWith(t *testing.T, tune func(*deploy.Protocol)) *replicated {
	c := newCluster(t)
	if tune != nil {
		tune(&c.protocol)
	}
	r := &replicated{cluster: c, addrs: map[uint64]string{}, https: map[uint64]string{}, reps: map[uint64]*server.Coordinator{}}
	names := append([]string{twopc.CoordinatorID, "client/test", "admin/test"}, engine.Services...)
	files, err := server.WriteCerts(filepath.Join(c.dir, "certs"), names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.tls = files
	_, adminTLS, err := files["admin/test"].Load()
	if err != nil {
		t.Fatal(err)
	}
	c.web = &client.HTTP{TLS: adminTLS}
	_, c.cliTLS, err = files["client/test"].Load()
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for id := uint64(1); id <= 3; id++ {
		r.addrs[id], r.https[id] = freeAddr(t), freeAddr(t)
		list = append(list, r.addrs[id])
	}
	// Participants and clients know every replica.
	c.grpc[twopc.CoordinatorID] = strings.Join(list, ",")
	c.http[twopc.CoordinatorID] = "unused"
	for _, id := range engine.Services {
		c.startService(id)
	}
	for id := uint64(1); id <= 3; id++ {
		r.startReplica(id)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, co := range r.reps {
			co.Shutdown(ctx)
		}
		c.stop()
	})
	return r
}

// TestReplicatedCoordinatorNetworked runs purchases through a client that
// knows three coordinator replicas (mutual TLS everywhere), stops the
// leader half way, and checks that every outcome holds in the services;
// a follower refuses outcome queries with the leader's address, and a
// participant's certificate may not send raft messages.
func TestReplicatedCoordinatorNetworked(t *testing.T) {
	r := newReplicated(t)
	cl := r.client()
	lead := r.leader()
	reqs := genRequests(t, r.world, 300, 5, "rep-")
	done := make(chan map[string]twopc.Outcome)
	go func() { done <- runAll(t, cl, reqs, 16) }()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r.reps[lead].Shutdown(ctx)
	cancel()
	delete(r.reps, lead)
	outcomes := <-done
	next := r.leader()
	if next == lead {
		t.Fatalf("replica %d still leads after it stopped", lead)
	}
	r.http[twopc.CoordinatorID] = r.https[next]
	checkOutcomes(t, r.waitQuiet(), outcomes)

	// The new leader's timeline of a transaction holds the coordinator's
	// records from the raft log: those of the old leader too.
	var committed string
	for _, q := range reqs {
		if o, ok := outcomes[q.TxID]; ok && o.Committed {
			committed = q.TxID
			break
		}
	}
	if committed == "" {
		t.Fatal("no transaction committed")
	}
	var tl server.AdminTimeline
	if err := r.web.Get(context.Background(), r.https[next], "/v1/admin/transactions/"+committed+"/timeline", &tl); err != nil {
		t.Fatal(err)
	}
	var coordTypes []string
	for _, e := range tl.Entries {
		if e.Component == twopc.CoordinatorID {
			coordTypes = append(coordTypes, e.Type)
		}
	}
	if tl.Status != "COMMITTED" || len(tl.Errors) != 0 || len(coordTypes) < 2 || coordTypes[0] != "BEGIN" || !slices.Contains(coordTypes, "COMMIT") {
		t.Fatalf("timeline of %s at the new leader: status %s, errors %v, coordinator records %v; want COMMITTED, no errors, BEGIN first and a COMMIT", committed, tl.Status, tl.Errors, coordTypes)
	}

	// A follower does not answer an outcome query from its own view: it
	// names the leader, and the client follows.
	var follower uint64
	for id := range r.reps {
		if id != next {
			follower = id
		}
	}
	fconn, err := grpc.NewClient(r.addrs[follower], grpc.WithTransportCredentials(credentials.NewTLS(auth.ExpectServer(r.cliTLS, auth.Coordinator))))
	if err != nil {
		t.Fatal(err)
	}
	defer fconn.Close()
	qctx, qcancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = dtxv1.NewCoordinatorClient(fconn).Outcome(qctx, &dtxv1.OutcomeRequest{TransactionId: reqs[0].TxID})
	qcancel()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "leader at "+r.addrs[next]) {
		t.Fatalf("outcome query at follower %d: %v, want UNAVAILABLE naming the leader %s", follower, err, r.addrs[next])
	}
	st, _, err := cl.Outcome(context.Background(), reqs[0].TxID)
	if err != nil || (st != dtxv1.Status_STATUS_COMMITTED && st != dtxv1.Status_STATUS_ROLLED_BACK) {
		t.Fatalf("outcome of %s through the replicas: %v, %v", reqs[0].TxID, st, err)
	}

	// Raft messages: the coordinator identity only.
	_, invTLS, err := r.tls["inventory"].Load()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(r.addrs[next], grpc.WithTransportCredentials(credentials.NewTLS(auth.ExpectServer(invTLS, auth.Coordinator))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = dtxv1.NewRaftClient(conn).Send(context.Background(), &dtxv1.RaftBatch{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a participant sent raft messages: %v", err)
	}
	sst, err := dtxv1.NewRaftClient(conn).Snapshot(context.Background(), &dtxv1.RaftSnapshotRequest{Index: 1})
	if err == nil {
		_, err = sst.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a participant fetched a coordinator snapshot: %v", err)
	}
}

func (r *replicated) status(id uint64) deploy.ReplicaStatus {
	r.t.Helper()
	var st deploy.CoordStatus
	if err := r.web.Get(context.Background(), r.https[id], "/v1/status", &st); err != nil || st.Replica == nil {
		r.t.Fatalf("status of replica %d: %v", id, err)
	}
	return *st.Replica
}

// TestReplicatedSnapshotFetchNetworked: with snapshots every few KiB of
// raft log, a follower stopped while the others snapshot and compact past
// its log comes back and catches up by fetching the leader's snapshot
// over mutual TLS (Raft/Snapshot); then the leader stops and the
// outcomes still hold.
func TestReplicatedSnapshotFetchNetworked(t *testing.T) {
	r := newReplicatedWith(t, func(p *deploy.Protocol) { p.SnapshotLogBytes, p.SnapshotEvery = 8<<10, 0 })
	cl := r.client()
	lead := r.leader()
	down := lead%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r.reps[down].Shutdown(ctx)
	cancel()
	delete(r.reps, down)
	downLast := uint64(0)
	for id := range r.reps {
		downLast = max(downLast, r.status(id).Commit)
	}
	outcomes := runAll(t, cl, genRequests(t, r.world, 200, 5, "snap-a-"), 16)
	for id := range r.reps {
		if st := r.status(id); st.Compacted <= downLast {
			t.Fatalf("replica %d compacted only up to %d after 200 purchases (the stopped one's log ends near %d)", id, st.Compacted, downLast)
		}
	}
	r.startReplica(down)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, lst := r.status(down), r.status(r.leader())
		if st.Compacted > downLast && st.Applied >= lst.Compacted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d did not catch up by a snapshot: %+v (leader %+v)", down, st, lst)
		}
		time.Sleep(20 * time.Millisecond)
	}
	maps.Copy(outcomes, runAll(t, cl, genRequests(t, r.world, 100, 5, "snap-b-"), 16))
	lead = r.leader()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	r.reps[lead].Shutdown(ctx)
	cancel()
	delete(r.reps, lead)
	maps.Copy(outcomes, runAll(t, cl, genRequests(t, r.world, 100, 5, "snap-c-"), 16))
	r.http[twopc.CoordinatorID] = r.https[r.leader()]
	checkOutcomes(t, r.waitQuiet(), outcomes)
}
