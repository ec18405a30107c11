package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

// secureCluster is the in-process cluster with mutual TLS and
// authorization, and certificates for an attacker to choose from.
type secureCluster struct {
	*cluster
	files  map[string]*server.TLSFiles
	tokens map[string]string // identity URI -> bearer token
}

func newSecureCluster(t *testing.T) *secureCluster {
	c := newCluster(t)
	names := append([]string{twopc.CoordinatorID, "client/test", "admin/test", "app/test"}, engine.Services...)
	files, err := server.WriteCerts(filepath.Join(c.dir, "certs"), names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.tls = files
	sc := &secureCluster{cluster: c, files: files, tokens: map[string]string{}}
	var lines strings.Builder
	for _, id := range []string{"client/test", "admin/test"} {
		tok, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		sc.tokens[id] = tok
		fmt.Fprintf(&lines, "dtx://%s %s\n", id, tok)
	}
	c.tokens = filepath.Join(c.dir, "http-tokens")
	if err := os.WriteFile(c.tokens, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c.web = &client.HTTP{TLS: sc.tlsOf("admin/test")}
	c.start()
	return sc
}

func (sc *secureCluster) tlsOf(name string) *tls.Config {
	sc.t.Helper()
	_, cli, err := sc.files[name].Load()
	if err != nil {
		sc.t.Fatal(err)
	}
	return cli
}

// client returns a client library instance with the certificate of name.
func (sc *secureCluster) clientAs(name string) *client.Client {
	cl, err := client.Dial(client.Config{Addr: sc.grpc[twopc.CoordinatorID], TLS: sc.tlsOf(name), RetryFor: 20 * time.Second})
	if err != nil {
		sc.t.Fatal(err)
	}
	sc.t.Cleanup(func() { cl.Close() })
	return cl
}

// transportAs opens the raw transport API of node with the certificate of
// name (nil creds: plaintext).
func (sc *secureCluster) transportAs(node, name string) dtxv1.TransportClient {
	sc.t.Helper()
	creds := insecure.NewCredentials()
	if name != "" {
		creds = credentials.NewTLS(sc.tlsOf(name))
	}
	conn, err := grpc.NewClient(sc.grpc[node], grpc.WithTransportCredentials(creds))
	if err != nil {
		sc.t.Fatal(err)
	}
	sc.t.Cleanup(func() { conn.Close() })
	return dtxv1.NewTransportClient(conn)
}

func deliver(t *testing.T, tc dtxv1.TransportClient, msgs ...*dtxv1.Message) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tc.Deliver(ctx, &dtxv1.Batch{Messages: msgs})
	return err
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if want == codes.InvalidArgument && errors.Is(err, client.ErrRejected) {
		return // the client library's form of INVALID_ARGUMENT
	}
	if status.Code(err) != want {
		t.Errorf("%s: got %v, want %s", what, err, want)
	}
}

// TestAttackForgedMessages plays an attacker on the network who holds some
// certificate of the CA (or none), and tries to make a service commit or
// abort a branch alone, or to poison ids at the coordinator. Every attempt
// is refused and counted, and honest purchases go on committing, each in
// all three services.
func TestAttackForgedMessages(t *testing.T) {
	sc := newSecureCluster(t)
	cl := sc.clientAs("client/test")
	reqs := genRequests(t, sc.world, 120, 21, "honest-")
	done := make(chan map[string]twopc.Outcome)
	go func() { done <- runAll(t, cl, reqs[:60], 8) }()

	commit := func(from, tx string) *dtxv1.Message {
		return &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_COMMIT, From: from, To: "inventory", Tx: tx, Epoch: 1}
	}
	abort := func(tx string) *dtxv1.Message {
		return &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_ABORT, From: twopc.CoordinatorID, To: "inventory", Tx: tx, Epoch: 1}
	}
	// The order service's certificate plays the coordinator.
	asOrder := sc.transportAs("inventory", "order")
	for i := range 60 {
		wantCode(t, "order's certificate sends COMMIT as the coordinator", deliver(t, asOrder, commit(twopc.CoordinatorID, reqs[i].TxID)), codes.PermissionDenied)
		wantCode(t, "order's certificate sends ABORT as the coordinator", deliver(t, asOrder, abort(reqs[i].TxID)), codes.PermissionDenied)
	}
	// The same over the stream form of the transport: each refused batch
	// is counted and the stream goes on.
	before := sc.parts["inventory"].NetStats().Unauthorized
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ds, err := asOrder.DeliverStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := ds.Send(&dtxv1.Batch{Messages: []*dtxv1.Message{commit(twopc.CoordinatorID, reqs[i].TxID)}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := ds.CloseAndRecv(); err != nil || r.GetAccepted() != 0 {
		t.Errorf("forged COMMITs over DeliverStream: accepted %d, err %v", r.GetAccepted(), err)
	}
	cancel()
	if got := sc.parts["inventory"].NetStats().Unauthorized - before; got != 5 {
		t.Errorf("forged batches over DeliverStream counted %d, want 5", got)
	}
	// Right name, wrong role: a participant never sends to a participant.
	wantCode(t, "order sends PREPARE to inventory", deliver(t, asOrder, &dtxv1.Message{
		Type: dtxv1.MsgType_MSG_TYPE_PREPARE, From: "order", To: "inventory", Tx: "x1", Epoch: 1}), codes.PermissionDenied)
	// A client's certificate may not use the transport at all.
	asClient := sc.transportAs("inventory", "client/test")
	wantCode(t, "a client delivers COMMIT", deliver(t, asClient, commit(twopc.CoordinatorID, "x2")), codes.PermissionDenied)
	// An admin's neither, not even to the coordinator.
	asAdmin := sc.transportAs(twopc.CoordinatorID, "admin/test")
	future := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_VOTE, Vote: dtxv1.Vote_VOTE_YES, From: "inventory", To: twopc.CoordinatorID, Tx: reqs[60].TxID, Epoch: 1}
	wantCode(t, "an admin forges a vote", deliver(t, asAdmin, future), codes.PermissionDenied)
	// The payment service votes as inventory for an id not used yet.
	asPayment := sc.transportAs(twopc.CoordinatorID, "payment")
	wantCode(t, "payment votes as inventory", deliver(t, asPayment, future), codes.PermissionDenied)
	// A batch with one bad message among good ones is refused whole.
	inq := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_INQUIRE, From: "payment", To: twopc.CoordinatorID, Tx: "never-1", Epoch: 1}
	wantCode(t, "a mixed batch", deliver(t, asPayment, inq, future), codes.PermissionDenied)
	// No certificate at all: the handshake fails.
	plain := sc.transportAs("inventory", "")
	if err := deliver(t, plain, commit(twopc.CoordinatorID, "x3")); err == nil {
		t.Error("a plaintext call to a TLS server was served")
	}

	first := <-done
	// The ids the forgeries named are not poisoned: the rest of the
	// purchases (among them reqs[60], the "future" id) run normally.
	rest := runAll(t, cl, reqs[60:], 8)
	for k, v := range rest {
		first[k] = v
	}
	committed := 0
	for _, o := range first {
		if o.Committed {
			committed++
		}
		if o.Duplicate {
			t.Errorf("%s: answered as a duplicate: a forged message touched it", o.Tx)
		}
	}
	if committed < 100 {
		t.Errorf("only %d of 120 honest purchases committed", committed)
	}
	checkOutcomes(t, sc.waitQuiet(), first)
	if n := sc.parts["inventory"].NetStats().Unauthorized; n < 126 {
		t.Errorf("inventory counted %d unauthorized batches, want at least 126", n)
	}
	var st server.CoordStatusBody
	if err := sc.web.Get(context.Background(), sc.http[twopc.CoordinatorID], "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Unauthorized < 2 {
		t.Errorf("coordinator counted %d unauthorized batches, want at least 2", st.Unauthorized)
	}
	body := sc.get(t, "inventory", "/metrics", "admin/test", "")
	if !strings.Contains(body, `dtx_unauthorized_total{kind="message"}`) {
		t.Errorf("/metrics has no dtx_unauthorized_total{kind=\"message\"}")
	}
	// Both kinds of process say how their snapshots go.
	for _, node := range []string{"inventory", twopc.CoordinatorID} {
		body := sc.get(t, node, "/metrics", "admin/test", "")
		for _, m := range []string{"dtx_snapshots_total ", "dtx_snapshot_last_bytes ", "dtx_snapshot_last_table_bytes ",
			"dtx_snapshot_loop_pause_max_seconds ", "dtx_start_snapshot_load_seconds ", "dtx_start_replay_seconds "} {
			if !strings.Contains(body, "\n"+m) {
				t.Errorf("%s /metrics has no %s", node, m)
			}
		}
	}
}

// TestAttackSubmitTx: SubmitTx needs the app role, and the purchase
// services take whole purchases only: one branch at inventory (stock with
// no payment) is refused with a clear error.
func TestAttackSubmitTx(t *testing.T) {
	sc := newSecureCluster(t)
	req := genRequests(t, sc.world, 3, 5, "stx-")
	op, err := req[0].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	asClient := sc.clientAs("client/test")
	_, err = asClient.SubmitTx(context.Background(), req[0].TxID, engine.Branches(op, engine.Services))
	wantCode(t, "a client calls SubmitTx", err, codes.PermissionDenied)

	start := time.Now()
	_, err = sc.clientAs("admin/test").Submit(context.Background(), &req[2])
	if !errors.Is(err, client.ErrDenied) || time.Since(start) > 5*time.Second {
		t.Errorf("an admin submits a purchase: %v after %v, want ErrDenied at once", err, time.Since(start))
	}
	app := sc.clientAs("app/test")
	_, err = app.SubmitTx(context.Background(), req[0].TxID, engine.Branches(op, []string{"inventory"}))
	wantCode(t, "SubmitTx with the inventory branch only", err, codes.InvalidArgument)
	if err != nil && !strings.Contains(err.Error(), "whole purchases") {
		t.Errorf("error does not say why: %v", err)
	}
	other, _ := req[1].MarshalBinary()
	mixed := engine.Branches(op, engine.Services)
	mixed[1].Op = other
	_, err = app.SubmitTx(context.Background(), req[0].TxID, mixed)
	wantCode(t, "SubmitTx with two different purchases", err, codes.InvalidArgument)
	_, err = app.SubmitTx(context.Background(), "not-"+req[0].TxID, engine.Branches(op, engine.Services))
	wantCode(t, "SubmitTx with another transaction's purchase", err, codes.InvalidArgument)
	_, err = app.SubmitTx(context.Background(), req[0].TxID, append(engine.Branches(op, engine.Services), twopc.Branch{Node: "inventory", Op: op}))
	wantCode(t, "SubmitTx with a branch twice", err, codes.InvalidArgument)

	o, err := app.SubmitTx(context.Background(), req[0].TxID, engine.Branches(op, engine.Services))
	if err != nil || !o.Committed {
		t.Fatalf("a whole purchase through SubmitTx: %+v %v", o, err)
	}
	checkOutcomes(t, sc.waitQuiet(), map[string]twopc.Outcome{req[0].TxID: o})
}

// get does one HTTPS GET at node as name (a certificate; "" for none), or
// with token.
func (sc *secureCluster) get(t *testing.T, node, path, name, token string) string {
	t.Helper()
	code, body := sc.do(t, http.MethodGet, node, path, name, token, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s at %s: %d %s", path, node, code, body)
	}
	return body
}

func (sc *secureCluster) do(t *testing.T, method, node, path, name, token string, body []byte) (int, string) {
	t.Helper()
	cfg := sc.tlsOf("client/test")
	if name != "" {
		cfg = sc.tlsOf(name)
	} else {
		cfg.Certificates = nil
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, "https://"+sc.http[node]+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAttackHTTP: with TLS on, the JSON API is HTTPS and needs a client
// certificate or a bearer token of a role that may do the request;
// liveness and readiness stay open; plain HTTP gets nothing.
func TestAttackHTTP(t *testing.T) {
	sc := newSecureCluster(t)
	line := `{"transaction_id":"h1","user_id":"user-1","item_id":"item-1","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`
	co := twopc.CoordinatorID
	for _, c := range []struct {
		what, method, node, path, cert, token string
		body                                  string
		want                                  int
	}{
		{"anonymous purchase", "POST", co, "/v1/purchases", "", "", line, 401},
		{"anonymous state", "GET", "inventory", "/v1/state", "", "", "", 401},
		{"anonymous metrics", "GET", "payment", "/metrics", "", "", "", 401},
		{"anonymous status", "GET", co, "/v1/status", "", "", "", 401},
		{"unknown token", "GET", co, "/v1/transactions/h1", "", strings.Repeat("x", 43), "", 401},
		{"client reads balances", "GET", "payment", "/v1/state", "client/test", "", "", 403},
		{"client token reads balances", "GET", "payment", "/v1/state", "", sc.tokens["client/test"], "", 403},
		{"admin submits", "POST", co, "/v1/purchases", "admin/test", "", line, 403},
		{"order's certificate submits", "POST", co, "/v1/purchases", "order", "", line, 403},
		{"client purchase", "POST", co, "/v1/purchases", "client/test", "", line, 200},
		{"client token outcome", "GET", co, "/v1/transactions/h1", "", sc.tokens["client/test"], "", 200},
		{"admin state", "GET", "inventory", "/v1/state", "admin/test", "", "", 200},
		{"admin token metrics", "GET", "order", "/metrics", "", sc.tokens["admin/test"], "", 200},
		{"anonymous healthz", "GET", "order", "/healthz", "", "", "", 200},
		{"anonymous readyz", "GET", co, "/readyz", "", "", "", 200},
	} {
		code, body := sc.do(t, c.method, c.node, c.path, c.cert, c.token, []byte(c.body))
		if code != c.want {
			t.Errorf("%s: %s %s: %d %s, want %d", c.what, c.method, c.path, code, body, c.want)
		}
	}
	resp, err := http.Get("http://" + sc.http[co] + "/v1/transactions/h1")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out map[string]any
		if json.Unmarshal(b, &out) == nil && out["status"] != nil {
			t.Errorf("plain HTTP got an outcome: %s", b)
		}
	}
}

// TestAttackPlaintextNeedsLoopback: without TLS a server binds loopback
// addresses only, unless Insecure; it says why.
func TestAttackPlaintextNeedsLoopback(t *testing.T) {
	c := newCluster(t)
	cm := c.common(twopc.CoordinatorID)
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		cm.Listen = addr
		_, err := server.StartCoordinator(server.CoordinatorConfig{Common: cm, Protocol: c.protocol})
		if err == nil || !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("plaintext on %s: %v, want a refusal that names --insecure", addr, err)
		}
	}
	cm = c.common("inventory")
	cm.HTTP = "0.0.0.0:0"
	open, _ := server.Builtin("inventory", &c.world, time.Time{})
	if _, err := server.StartParticipant(server.ParticipantConfig{Common: cm, OpenService: open, Protocol: c.protocol}); err == nil {
		t.Error("plaintext HTTP on all interfaces was allowed")
	}
}

// TestAttackEpochAndOps plays an attacker against a plaintext cluster on
// loopback (where a sender's name is taken on its word): a PREPARE with an
// absurd epoch and PREPAREs with malformed operations must not raise the
// services' epoch, which would fence off every real PREPARE for good.
func TestAttackEpochAndOps(t *testing.T) {
	c := newCluster(t)
	c.start()
	sc := &secureCluster{cluster: c}
	tc := sc.transportAs("inventory", "")
	huge := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_PREPARE, From: twopc.CoordinatorID, To: "inventory", Tx: "evil-1", Epoch: 1 << 62, Op: []byte{1, 2, 3}}
	if err := deliver(t, tc, huge); err != nil {
		t.Fatal(err)
	}
	bad := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_PREPARE, From: twopc.CoordinatorID, To: "inventory", Tx: "evil-2", Epoch: 1000, Op: []byte("not an operation")}
	if err := deliver(t, tc, bad); err != nil {
		t.Fatal(err)
	}
	// A well-formed purchase at the highest epoch a participant believes:
	// it prepares (in plaintext a sender's name is taken on its word) and
	// fences off the real coordinator's PREPAREs, until the coordinator
	// sees a vote at that epoch and moves up to it.
	forged := genRequests(t, c.world, 1, 99, "evil-")[0]
	op, err := forged.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	fence := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_PREPARE, From: twopc.CoordinatorID, To: "inventory", Tx: forged.TxID, Epoch: twopc.MaxEpochStep, Op: op}
	if err := deliver(t, tc, fence); err != nil {
		t.Fatal(err)
	}
	// A forged COMMIT or ABORT raises nothing.
	abort := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_ABORT, From: twopc.CoordinatorID, To: "payment", Tx: "evil-3", Epoch: twopc.MaxEpochStep}
	if err := deliver(t, sc.transportAs("payment", ""), abort); err != nil {
		t.Fatal(err)
	}
	// The same after a restart of inventory (its log holds the forged
	// PREPARED, at the fencing epoch).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c.parts["inventory"].Shutdown(ctx)
	cancel()
	c.startService("inventory")
	cl := c.client()
	outcomes := runAll(t, cl, genRequests(t, c.world, 40, 3, "after-"), 4)
	committed := 0
	for _, o := range outcomes {
		if o.Committed {
			committed++
		}
	}
	stale := 0
	for _, o := range outcomes {
		if strings.Contains(o.Reason, "stale epoch") {
			stale++
		}
	}
	if committed < 30 || stale > 8 {
		t.Errorf("after the forged PREPAREs: %d of 40 purchases committed, %d rolled back on a stale epoch", committed, stale)
	}
	checkOutcomes(t, c.waitQuiet(), outcomes)
}

// TestAttackPresumeBudget: a participant (here with its own, valid
// certificate: a compromised service) that floods the coordinator with
// inquiries about ids never used gets at most its presumed-abort budget
// logged and remembered; the rest is shed and counted.
func TestAttackPresumeBudget(t *testing.T) {
	sc := newSecureCluster(t)
	tc := sc.transportAs(twopc.CoordinatorID, "payment")
	// Five times the budget of one window (4096 per 1000 ticks, a second):
	// even a machine so loaded that it takes four seconds to take them in
	// gets more than a budget's worth in one window.
	const n = 20000
	var batch []*dtxv1.Message
	for i := range n {
		batch = append(batch, &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_INQUIRE, From: "payment", To: twopc.CoordinatorID,
			Tx: fmt.Sprintf("flood-%d-%s", i, strings.Repeat("x", 200)), Epoch: 1})
		if len(batch) == 2000 {
			if err := deliver(t, tc, batch...); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	var st server.CoordStatusBody
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := sc.web.Get(context.Background(), sc.http[twopc.CoordinatorID], "/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		if st.Shed > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Shed == 0 {
		t.Fatalf("%d inquiries about unknown ids in one go: nothing shed", n)
	}
	// Honest purchases still commit.
	outcomes := runAll(t, sc.clientAs("client/test"), genRequests(t, sc.world, 30, 8, "ok-"), 4)
	checkOutcomes(t, sc.waitQuiet(), outcomes)
}

// rogueTransport counts what reaches a rogue transport server.
type rogueTransport struct {
	dtxv1.UnimplementedTransportServer
	calls atomic.Int64
}

func (r *rogueTransport) Deliver(context.Context, *dtxv1.Batch) (*dtxv1.DeliverReply, error) {
	r.calls.Add(1)
	return &dtxv1.DeliverReply{}, nil
}

func (r *rogueTransport) DeliverStream(st dtxv1.Transport_DeliverStreamServer) error {
	r.calls.Add(1)
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
	}
}

// TestAttackRogueServer: a process at the payment service's address, with a
// valid certificate of the CA but another identity (the order service's),
// never gets the coordinator's traffic: the coordinator checks who it dialled.
func TestAttackRogueServer(t *testing.T) {
	c := newCluster(t)
	names := append([]string{twopc.CoordinatorID, "client/test", "admin/test"}, engine.Services...)
	files, err := server.WriteCerts(filepath.Join(c.dir, "certs"), names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.tls = files
	c.protocol.PrepareTimeout = 300 * time.Millisecond
	for _, id := range engine.Services {
		c.startService(id)
	}
	t.Cleanup(c.stop)
	srvTLS, _, err := files["order"].Load()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rogue := &rogueTransport{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)))
	dtxv1.RegisterTransportServer(gs, rogue)
	go gs.Serve(lis)
	defer gs.Stop()
	c.grpc["payment"] = lis.Addr().String() // the coordinator dials the rogue as payment
	c.startCoordinator()
	_, cliTLS, err := files["client/test"].Load()
	if err != nil {
		t.Fatal(err)
	}
	c.cliTLS = cliTLS
	outcomes := runAll(t, c.client(), genRequests(t, c.world, 10, 2, "rogue-"), 2)
	for _, o := range outcomes {
		if o.Committed {
			t.Errorf("%s committed without the real payment service", o.Tx)
		}
	}
	if n := rogue.calls.Load(); n != 0 {
		t.Errorf("the rogue server got %d calls from the coordinator", n)
	}
}
