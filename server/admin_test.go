package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/twopc"
)

func purchaseLine(tx string, n int) string {
	return fmt.Sprintf(`{"transaction_id":%q,"user_id":"user-%d","item_id":"item-%d","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`, tx, n, n)
}

// adminGet GETs an admin document as admin/test and decodes it into v.
func (sc *secureCluster) adminGet(t *testing.T, node, path string, v any) {
	t.Helper()
	body := sc.get(t, node, path, "admin/test", "")
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s at %s: %v: %s", path, node, err, body)
	}
}

// waitFor polls cond every 20ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after 20s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func inDoubtIDs(d server.AdminInDoubt) []string {
	var ids []string
	for _, b := range d.InDoubt {
		ids = append(ids, b.ID)
	}
	return ids
}

// adminCall calls Admin.Call on node with the certificate of name.
func (sc *secureCluster) adminCall(node, name string, req *dtxv1.AdminRequest) (*dtxv1.AdminReply, error) {
	conn, err := grpc.NewClient(sc.grpc[node], grpc.WithTransportCredentials(credentials.NewTLS(sc.tlsOf(name))))
	if err != nil {
		sc.t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return dtxv1.NewAdminClient(conn).Call(ctx, req)
}

// TestAdminInDoubtAndHeuristics runs the operator's story over real
// servers with mutual TLS: a participant is down, so two purchases stay
// in doubt at the other two; the coordinator is killed; the in-doubt
// branches show in the participants' admin lists. One purchase is left
// alone and clears when the coordinator returns (presumed abort). The
// other is decided by hand — COMMIT at inventory (client certificate),
// ABORT at payment (bearer token) — which releases its locks and is
// reported as heuristic; when the coordinator returns and aborts it,
// inventory records and reports a heuristic mismatch, payment an
// agreement. The merged timeline shows it all.
func TestAdminInDoubtAndHeuristics(t *testing.T) {
	sc := newSecureCluster(t)
	co := twopc.CoordinatorID
	// A long prepare timeout: the purchases wait for order's vote until
	// the coordinator is killed.
	sc.coord.Shutdown(context.Background())
	sc.protocol.PrepareTimeout = time.Minute
	sc.startCoordinator()
	sc.parts["order"].Shutdown(context.Background())
	delete(sc.parts, "order")

	cl := sc.clientAs("client/test")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tx := range []string{"alone", "byhand"} {
		n := map[string]int{"alone": 1, "byhand": 2}[tx]
		go cl.SubmitLine(ctx, purchaseLine(tx, n))
	}
	for _, svc := range []string{"inventory", "payment"} {
		waitFor(t, "both purchases in doubt at "+svc, func() bool {
			var d server.AdminInDoubt
			sc.adminGet(t, svc, "/v1/admin/in-doubt", &d)
			return slices.Equal(inDoubtIDs(d), []string{"alone", "byhand"})
		})
	}
	// The coordinator learns the votes a moment after the branches
	// prepared.
	var txs server.AdminTransactions
	waitFor(t, "both purchases waiting for order's vote at the coordinator", func() bool {
		sc.adminGet(t, co, "/v1/admin/transactions", &txs)
		return txs.InFlight == 2 && txs.InDoubt == 2 && !slices.ContainsFunc(txs.Transactions, func(x server.AdminTx) bool {
			return x.Phase != "COLLECTING" || !slices.Equal(x.Waiting, []string{"order"}) || !slices.Equal(x.InDoubt, []string{"inventory", "payment"})
		})
	})
	// Retry now: PREPARE again to the one that has not voted.
	code, body := sc.do(t, http.MethodPost, co, "/v1/admin/transactions/alone/retry", "admin/test", "", nil)
	if code != http.StatusOK || !strings.Contains(body, `"sent":["order"]`) {
		t.Fatalf("retry: %d %s", code, body)
	}

	// Kill the coordinator: the branches stay in doubt.
	kctx, kcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	sc.coord.Shutdown(kctx)
	kcancel()
	sc.coord = nil
	var d server.AdminInDoubt
	sc.adminGet(t, "inventory", "/v1/admin/in-doubt", &d)
	if !slices.Equal(inDoubtIDs(d), []string{"alone", "byhand"}) || d.InDoubt[0].AgeMS <= 0 {
		t.Fatalf("in doubt after the coordinator died: %+v", d)
	}

	// Decide "byhand" by hand.
	force := func(svc, outcome, cert, token string) (int, string) {
		return sc.do(t, http.MethodPost, svc, "/v1/admin/transactions/byhand/force", cert, token,
			[]byte(`{"outcome":"`+outcome+`","note":"coordinator site lost"}`))
	}
	for _, who := range []struct{ cert, token string }{
		{"client/test", ""}, {co, ""}, {"inventory", ""}, {"", sc.tokens["client/test"]},
	} {
		if code, body := force("inventory", "COMMIT", who.cert, who.token); code != http.StatusForbidden {
			t.Fatalf("force as %+v: want 403, got %d %s", who, code, body)
		}
	}
	if code, body := force("inventory", "COMMIT", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("force without credentials: want 401, got %d %s", code, body)
	}
	if code, body := force("inventory", "MAYBE", "admin/test", ""); code != http.StatusBadRequest {
		t.Fatalf("force with a bad outcome: want 400, got %d %s", code, body)
	}
	if code, body := force("inventory", "COMMIT", "admin/test", ""); code != http.StatusOK || !strings.Contains(body, "HEURISTIC_COMMITTED") || !strings.Contains(body, "dtx://admin/test") {
		t.Fatalf("force COMMIT at inventory: %d %s", code, body)
	}
	if code, body := force("payment", "ABORT", "", sc.tokens["admin/test"]); code != http.StatusOK || !strings.Contains(body, "HEURISTIC_ABORTED") {
		t.Fatalf("force ABORT at payment: %d %s", code, body)
	}
	if code, body := force("payment", "ABORT", "admin/test", ""); code != http.StatusConflict {
		t.Fatalf("force a branch that is no longer in doubt: want 409, got %d %s", code, body)
	}
	sc.adminGet(t, "inventory", "/v1/admin/in-doubt", &d)
	if !slices.Equal(inDoubtIDs(d), []string{"alone"}) || len(d.Heuristics) != 1 || d.Heuristics[0].Outcome != "HEURISTIC_COMMITTED" || d.Heuristics[0].Mismatch {
		t.Fatalf("inventory after the decision: %+v", d)
	}
	{
		var st server.StateBody
		body := sc.get(t, "inventory", "/v1/state", "admin/test", "")
		if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Heuristics) != 1 || st.Heuristics[0].ID != "byhand" {
			t.Fatalf("/v1/state must report the heuristic branch: %v %s", err, body)
		}
	}

	// The gRPC face: admin only.
	if _, err := sc.adminCall("payment", "client/test", &dtxv1.AdminRequest{Action: "in-doubt"}); err == nil {
		t.Fatal("Admin.Call as a client must be refused")
	} else {
		wantCode(t, "Admin.Call as a client", err, codes.PermissionDenied)
	}
	rep, err := sc.adminCall("payment", "admin/test", &dtxv1.AdminRequest{Action: "in-doubt"})
	if err != nil || !strings.Contains(string(rep.GetJson()), `"HEURISTIC_ABORTED"`) {
		t.Fatalf("Admin.Call in-doubt as admin: %v %s", err, rep.GetJson())
	}
	_, err = sc.adminCall("payment", "admin/test", &dtxv1.AdminRequest{Action: "force", TransactionId: "alone", Outcome: "sideways"})
	wantCode(t, "Admin.Call force with a bad outcome", err, codes.InvalidArgument)
	// Transport.Records: the coordinator only.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	_, err = sc.transportAs("payment", "admin/test").Records(rctx, &dtxv1.RecordsRequest{TransactionId: "byhand"})
	wantCode(t, "Records as admin", err, codes.PermissionDenied)
	recs, err := sc.transportAs("payment", co).Records(rctx, &dtxv1.RecordsRequest{TransactionId: "byhand"})
	if err != nil || len(recs.GetRecords()) != 2 || recs.GetRecords()[1].GetType() != "HEURISTIC_ABORTED" {
		t.Fatalf("Records as the coordinator: %v %v", err, recs)
	}

	// The coordinator returns and presumes abort for both.
	sc.startCoordinator()
	sc.startService("order")
	for _, svc := range []string{"inventory", "payment"} {
		waitFor(t, "nothing in doubt at "+svc, func() bool {
			sc.adminGet(t, svc, "/v1/admin/in-doubt", &d)
			return len(d.InDoubt) == 0 && len(d.Heuristics) == 1 && d.Heuristics[0].Coordinator == "ABORT"
		})
		switch svc {
		case "inventory":
			if !d.Heuristics[0].Mismatch || d.Mismatches != 1 {
				t.Fatalf("inventory committed by hand, the coordinator aborted: a mismatch: %+v", d)
			}
			if m := sc.get(t, svc, "/metrics", "admin/test", ""); !strings.Contains(m, "dtx_heuristic_mismatch_total 1") ||
				!strings.Contains(m, `dtx_heuristic_branches{outcome="committed"} 1`) {
				t.Fatalf("inventory metrics: %s", grep([]byte(m), "heuristic"))
			}
		case "payment":
			if d.Heuristics[0].Mismatch || d.Mismatches != 0 {
				t.Fatalf("payment aborted by hand, the coordinator aborted: no mismatch: %+v", d)
			}
		}
	}
	waitFor(t, "nothing in flight at the coordinator", func() bool {
		sc.adminGet(t, co, "/v1/admin/transactions", &txs)
		return txs.InFlight == 0
	})

	var tl server.AdminTimeline
	sc.adminGet(t, co, "/v1/admin/transactions/byhand/timeline", &tl)
	var seq []string
	for _, e := range tl.Entries {
		// order may or may not have heard the ABORT, depending on how soon
		// it came back.
		if e.Type != "EVENT" && e.Component != "order" {
			seq = append(seq, e.Component+" "+e.Type)
		}
	}
	want := []string{"coordinator BEGIN", "inventory PREPARED", "payment PREPARED",
		"coordinator VOTED", "coordinator VOTED", "coordinator ABORT",
		"inventory HEURISTIC_COMMITTED", "payment HEURISTIC_ABORTED", "inventory HEURISTIC_MISMATCH"}
	if tl.Status != "ROLLED_BACK" || len(tl.Errors) != 0 || !slices.Equal(seq, want) {
		t.Fatalf("timeline: status %s errors %v\n got %v\nwant %v", tl.Status, tl.Errors, seq, want)
	}
	// Retry of an aborted transaction resends ABORT to those its ABORT
	// record names; the mismatch is not recorded twice.
	if code, body := sc.do(t, http.MethodPost, co, "/v1/admin/transactions/byhand/retry", "admin/test", "", nil); code != http.StatusOK || !strings.Contains(body, `"sent":["inventory","payment","order"]`) {
		t.Fatalf("retry of an aborted transaction: %d %s", code, body)
	}
	if code, body := sc.do(t, http.MethodPost, co, "/v1/admin/transactions/never-seen/retry", "admin/test", "", nil); code != http.StatusConflict {
		t.Fatalf("retry of an unknown transaction: want 409, got %d %s", code, body)
	}
	var w server.AdminWaits
	sc.adminGet(t, co, "/v1/admin/waits", &w)
	if w.Policy != "detect" {
		t.Fatalf("waits: %+v", w)
	}
	for _, path := range []string{"/v1/admin/transactions", "/v1/admin/waits", "/v1/admin/overview"} {
		if code, _ := sc.do(t, http.MethodGet, co, path, "client/test", "", nil); code != http.StatusForbidden {
			t.Fatalf("GET %s as a client: want 403, got %d", path, code)
		}
	}
}
