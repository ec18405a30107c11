package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/freeport"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
)

// freeAddr returns a free port on 127.0.0.1 (it may be taken again before
// use; tests live with that).
func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// cluster is a coordinator and the three built-in services, each with its
// own gRPC and HTTP port, all in this test process.
type cluster struct {
	t        *testing.T
	dir      string
	grpc     map[string]string
	http     map[string]string
	coord    *server.Coordinator
	parts    map[string]*server.Participant
	tls      map[string]*server.TLSFiles
	web      *client.HTTP              // how the test reaches the HTTP endpoints (nil: plain)
	tokens   string                    // HTTP bearer token file, if any
	cliTLS   *tls.Config               // the test client's TLS, if any
	extra    map[string]server.Service // more participants (name -> service)
	protocol deploy.Protocol
	world    purchase.World
	tracing  func(id string) *tracing.Provider // each component's span pipeline (nil: off)
}

// testWorld is a world where most generated purchases can commit.
func testWorld(items, buyers int) purchase.World {
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range items {
		w.Items[fmt.Sprintf("item-%d", i)] = purchase.Item{Stock: 100000}
	}
	for u := range buyers {
		w.Accounts[fmt.Sprintf("user-%d", u)] = purchase.Account{Balance: money.Cents(100_000_000)}
	}
	return w
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), grpc: map[string]string{}, http: map[string]string{},
		parts: map[string]*server.Participant{}, extra: map[string]server.Service{}}
	c.protocol = deploy.DefaultProtocol()
	c.protocol.PrepareTimeout = 2 * time.Second
	c.world = testWorld(50, 200)
	return c
}

func (c *cluster) nodes() []string {
	n := []string{twopc.CoordinatorID}
	n = append(n, engine.Services...)
	for name := range c.extra {
		n = append(n, name)
	}
	return n
}

func (c *cluster) common(id string) server.Common {
	if c.grpc[id] == "" {
		c.grpc[id], c.http[id] = freeAddr(c.t), freeAddr(c.t)
	}
	peers := map[string]string{}
	for _, n := range c.nodes() {
		if n != id {
			if c.grpc[n] == "" {
				c.grpc[n], c.http[n] = freeAddr(c.t), freeAddr(c.t)
			}
			peers[n] = c.grpc[n]
		}
	}
	cm := server.Common{ID: id, Listen: c.grpc[id], HTTP: c.http[id], DataDir: filepath.Join(c.dir, id), Peers: peers, Grace: 3 * time.Second}
	if c.tls != nil {
		cm.TLS = c.tls[id]
	}
	cm.HTTPTokens = c.tokens
	if c.tracing != nil {
		cm.Tracing = c.tracing(id)
	}
	return cm
}

func (c *cluster) startCoordinator() {
	c.t.Helper()
	parts := append([]string{}, engine.Services...)
	for name := range c.extra {
		parts = append(parts, name)
	}
	co, err := server.StartCoordinator(server.CoordinatorConfig{Common: c.common(twopc.CoordinatorID), Participants: parts, Protocol: c.protocol})
	if err != nil {
		c.t.Fatal(err)
	}
	c.coord = co
}

func (c *cluster) startService(id string) {
	c.t.Helper()
	cfg := server.ParticipantConfig{Common: c.common(id), Protocol: c.protocol}
	if svc, ok := c.extra[id]; ok {
		cfg.Service = svc
	} else {
		open, err := server.Builtin(id, &c.world, time.Time{})
		if err != nil {
			c.t.Fatal(err)
		}
		cfg.OpenService = open
	}
	p, err := server.StartParticipant(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.parts[id] = p
}

func (c *cluster) start() {
	for _, id := range engine.Services {
		c.startService(id)
	}
	for id := range c.extra {
		c.startService(id)
	}
	c.startCoordinator()
	c.t.Cleanup(c.stop)
}

func (c *cluster) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.coord != nil {
		c.coord.Shutdown(ctx)
		c.coord = nil
	}
	for id, p := range c.parts {
		p.Shutdown(ctx)
		delete(c.parts, id)
	}
}

func (c *cluster) client() *client.Client {
	cl, err := client.Dial(client.Config{Addr: c.grpc[twopc.CoordinatorID], TLS: c.cliTLS, RetryFor: 30 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// waitQuiet waits until nothing is in flight or in doubt, then checks every
// invariant, and returns the state.
func (c *cluster) waitQuiet() *deploy.ClusterState {
	c.t.Helper()
	svcs := map[string]string{}
	for _, n := range c.nodes()[1:] {
		svcs[n] = c.http[n]
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs, err := deploy.FetchClusterState(context.Background(), c.web, c.http[twopc.CoordinatorID], svcs)
		if err == nil && cs.Quiet() {
			if err := cs.Check(); err != nil {
				c.t.Fatal(err)
			}
			return cs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("not quiet after 30s: %v %+v", err, cs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func genRequests(t *testing.T, w purchase.World, n int, seed int64, prefix string) []purchase.Request {
	t.Helper()
	var buf bytes.Buffer
	opts := purchase.MixedGenOptions()
	opts.TxPrefix = prefix
	if err := purchase.GenerateRequests(&buf, n, seed, w, opts); err != nil {
		t.Fatal(err)
	}
	var reqs []purchase.Request
	rd := purchase.NewReader(&buf)
	for rd.Scan() {
		if ln := rd.Line(); ln.Err == nil {
			reqs = append(reqs, ln.Req)
		}
	}
	return reqs
}

// TestClusterInProcess runs purchases through the gRPC client API against a
// coordinator and three services talking gRPC on 127.0.0.1, and checks
// every outcome against the services' state.
func TestClusterInProcess(t *testing.T) {
	c := newCluster(t)
	c.start()
	cl := c.client()
	reqs := genRequests(t, c.world, 400, 1, "p-")
	outcomes := runAll(t, cl, reqs, 32)
	cs := c.waitQuiet()
	checkOutcomes(t, cs, outcomes)
	st := c.coord.NetStats()
	t.Logf("%d transactions, coordinator transport: %d calls, %.2f messages per call", len(reqs), st.TxCalls, st.MessagesPerCall())
}

func runAll(t *testing.T, cl *client.Client, reqs []purchase.Request, conc int) map[string]twopc.Outcome {
	t.Helper()
	var mu sync.Mutex
	out := map[string]twopc.Outcome{}
	jobs := make(chan *purchase.Request)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				o, err := cl.Submit(context.Background(), r)
				if err != nil {
					t.Errorf("%s: %v", r.TxID, err)
					continue
				}
				mu.Lock()
				if prev, ok := out[r.TxID]; ok && prev.Committed != o.Committed {
					t.Errorf("%s: two outcomes %v and %v", r.TxID, prev, o)
				}
				if !o.Duplicate {
					out[r.TxID] = o
				}
				mu.Unlock()
			}
		}()
	}
	for i := range reqs {
		jobs <- &reqs[i]
	}
	close(jobs)
	wg.Wait()
	return out
}

func checkOutcomes(t *testing.T, cs *deploy.ClusterState, outcomes map[string]twopc.Outcome) {
	t.Helper()
	committed := 0
	for tx, o := range outcomes {
		_, inOrder := cs.State.Order.Orders[tx]
		if inOrder != o.Committed {
			t.Errorf("%s: outcome committed=%v (%s) but order present=%v", tx, o.Committed, o.Reason, inOrder)
		}
		if o.Committed {
			committed++
		}
	}
	if committed == 0 {
		t.Fatal("nothing committed")
	}
	t.Logf("%d committed, %d rolled back", committed, len(outcomes)-committed)
}

// TestHTTPAPI drives the coordinator with plain HTTP/JSON, as curl would.
func TestHTTPAPI(t *testing.T) {
	c := newCluster(t)
	c.start()
	base := "http://" + c.http[twopc.CoordinatorID]
	post := func(body string) (int, map[string]any) {
		resp, err := http.Post(base+"/v1/purchases", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	line := `{"transaction_id":"h1","user_id":"user-1","item_id":"item-1","quantity":1,"price":"12.50","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`
	code, m := post(line)
	if code != 200 || m["status"] != "COMMITTED" || m["transaction_id"] != "h1" {
		t.Fatalf("submit: %d %v", code, m)
	}
	code, m = post(line)
	if code != 200 || m["status"] != "COMMITTED" || m["duplicate"] != true {
		t.Fatalf("resubmit: %d %v", code, m)
	}
	code, m = get("/v1/transactions/h1")
	if code != 200 || m["status"] != "COMMITTED" {
		t.Fatalf("outcome: %d %v", code, m)
	}
	code, m = get("/v1/transactions/nope")
	if code != 404 || m["status"] != "UNKNOWN" {
		t.Fatalf("unknown: %d %v", code, m)
	}
	code, m = post(`{"transaction_id":"h2","user_id":"user-1","item_id":"item-1","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1112","expiry":"12/39","cvv":"123"}}`)
	if code != 400 || m["status"] != "REJECTED" || !strings.Contains(fmt.Sprint(m["reason"]), "card_number") {
		t.Fatalf("bad card: %d %v", code, m)
	}
	code, m = post(`{"transaction_id":"h3","user_id":"user-1","item_id":"nosuchitem","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`)
	if code != 200 || m["status"] != "ROLLED_BACK" || !strings.Contains(fmt.Sprint(m["reason"]), "inventory") {
		t.Fatalf("unknown item: %d %v", code, m)
	}
	code, _ = post(strings.Repeat("x", 128<<10))
	if code != http.StatusRequestEntityTooLarge && code != http.StatusBadRequest {
		t.Fatalf("oversized body: %d", code)
	}
	for _, svc := range []string{twopc.CoordinatorID, "inventory"} {
		resp, err := http.Get("http://" + c.http[svc] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"dtx_wal_fsync_seconds", "dtx_transport_batch_messages"} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("%s /metrics lacks %s", svc, want)
			}
		}
		if svc == twopc.CoordinatorID && !bytes.Contains(body, []byte(`dtx_transactions_total{outcome="committed",reason=""} 1`)) {
			t.Errorf("coordinator metrics lack the committed transaction:\n%s", grep(body, "dtx_transactions_total"))
		}
		if svc == "inventory" && !bytes.Contains(body, []byte("dtx_in_doubt_branches 0")) {
			t.Errorf("inventory metrics lack the in-doubt gauge")
		}
		resp, err = http.Get("http://" + c.http[svc] + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	c.waitQuiet()
}

func grep(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestOutcomeExpired: past the dedup window, GET /v1/transactions/{id}
// answers 410 EXPIRED and the gRPC Outcome FAILED_PRECONDITION (the
// client's ErrOutcomeExpired), never UNKNOWN, which would read as "never
// ran".
func TestOutcomeExpired(t *testing.T) {
	c := newCluster(t)
	c.protocol.DedupWindow = time.Second // expired for at least a second
	c.protocol.PrepareTimeout = 500 * time.Millisecond
	c.start()
	cl := c.client()
	reqs := genRequests(t, c.world, 1, 3, "x-")
	if _, err := cl.Submit(context.Background(), &reqs[0]); err != nil {
		t.Fatal(err)
	}
	tx := reqs[0].TxID
	base := "http://" + c.http[twopc.CoordinatorID]
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/transactions/" + tx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			t.Fatalf("%s reported unknown before expired: %v", tx, m)
		}
		if resp.StatusCode == http.StatusGone {
			if m["status"] != "EXPIRED" || !strings.Contains(fmt.Sprint(m["error"]), "outcome expired") {
				t.Fatalf("expired: %v", m)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never expired: %d %v", resp.StatusCode, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, _, err := cl.Outcome(context.Background(), tx)
	if !errors.Is(err, twopc.ErrOutcomeExpired) {
		t.Fatalf("gRPC Outcome of an expired id: %v, want ErrOutcomeExpired", err)
	}
}
