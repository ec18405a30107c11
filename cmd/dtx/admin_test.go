package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/twopc"
)

// TestAdminAfterCoordinatorSIGKILL: the four dtx serve processes, order
// killed, two purchases in doubt at inventory and payment, then the
// coordinator SIGKILLed: the services' admin lists show both in doubt.
// One is decided by hand (COMMIT at inventory, ABORT at payment). The
// coordinator restarts and presumes abort: the one left alone clears, the
// one decided by hand is a heuristic mismatch at inventory (an error line
// in its log, the metric, the admin list) and an agreement at payment.
func TestAdminAfterCoordinatorSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	bin := buildDtx(t)
	c := newClCluster(t, bin, 4, 4, 0)
	// Purchases wait for order's vote until the coordinator dies.
	c.flags = map[string][]string{twopc.CoordinatorID: {"--prepare-timeout", "2m"}}
	c.startAll()
	c.kill("order", syscall.SIGKILL)

	cl := c.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, tx := range []string{"alone", "byhand"} {
		line := fmt.Sprintf(`{"transaction_id":%q,"user_id":"user-%d","item_id":"item-%d","quantity":1,"price":"1.00","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/39","cvv":"123"}}`, tx, i, i)
		go cl.SubmitLine(ctx, line)
	}
	type inDoubt struct {
		InDoubt []struct {
			ID string `json:"id"`
		} `json:"in_doubt"`
		Heuristics []struct {
			ID          string `json:"id"`
			Outcome     string `json:"outcome"`
			Coordinator string `json:"coordinator"`
			Mismatch    bool   `json:"mismatch"`
		} `json:"heuristics"`
	}
	get := func(svc string) inDoubt {
		t.Helper()
		var d inDoubt
		resp, err := http.Get("http://" + c.http[svc] + "/v1/admin/in-doubt")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	ids := func(d inDoubt) []string {
		var s []string
		for _, b := range d.InDoubt {
			s = append(s, b.ID)
		}
		return s
	}
	wait := func(what string, cond func() bool, show ...func() string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				var more string
				for _, f := range show {
					more += f()
				}
				t.Fatalf("not after 30s: %s %s", what, more)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, svc := range []string{"inventory", "payment"} {
		wait("both in doubt at "+svc, func() bool { return slices.Equal(ids(get(svc)), []string{"alone", "byhand"}) })
	}
	c.kill(twopc.CoordinatorID, syscall.SIGKILL)
	// The client would submit them again to the next coordinator (which
	// lost their BEGIN, unsynced, with the process): stop it.
	cancel()
	for _, svc := range []string{"inventory", "payment"} {
		if d := get(svc); !slices.Equal(ids(d), []string{"alone", "byhand"}) {
			t.Fatalf("%s after the coordinator's SIGKILL: %+v", svc, d)
		}
	}
	// At inventory with the CLI; at payment with the HTTP API.
	out := dtx(t, bin, "admin", "force", "byhand", "--http", c.http["inventory"], "--outcome", "commit", "--note", "coordinator gone", "--yes")
	if !strings.Contains(string(out), `"outcome": "HEURISTIC_COMMITTED"`) {
		t.Fatalf("dtx admin force: %s", out)
	}
	cmd := exec.Command(bin, "admin", "force", "alone", "--http", c.http["inventory"], "--outcome", "abort")
	cmd.Stdin = strings.NewReader("no\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not confirmed") {
		t.Fatalf("dtx admin force without confirmation must do nothing: %v %s", err, out)
	}
	resp, err := http.Post("http://"+c.http["payment"]+"/v1/admin/transactions/byhand/force", "application/json",
		bytes.NewReader([]byte(`{"outcome":"ABORT","note":"coordinator gone"}`)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("force ABORT at payment: %d %s", resp.StatusCode, b)
	}

	c.start(twopc.CoordinatorID)
	c.start("order")
	for _, svc := range []string{"inventory", "payment"} {
		var d inDoubt
		wait("nothing in doubt and the coordinator's ABORT heard at "+svc, func() bool {
			d = get(svc)
			return len(d.InDoubt) == 0 && len(d.Heuristics) == 1 && d.Heuristics[0].Coordinator == "ABORT"
		}, func() string {
			return fmt.Sprintf("%+v\n%s\nCOORD\n%s", d, c.logTail(svc), c.logTail(twopc.CoordinatorID))
		})
	}
	if d := get("inventory"); !d.Heuristics[0].Mismatch || d.Heuristics[0].Outcome != "HEURISTIC_COMMITTED" {
		t.Fatalf("inventory: want a mismatch: %+v", d)
	}
	if d := get("payment"); d.Heuristics[0].Mismatch {
		t.Fatalf("payment: want an agreement: %+v", d)
	}
	resp, err = http.Get("http://" + c.http["inventory"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "\ndtx_heuristic_mismatch_total 1\n") {
		t.Fatal("inventory's dtx_heuristic_mismatch_total is not 1")
	}
	wait("the mismatch in inventory's error log", func() bool { return strings.Contains(c.logTail("inventory"), "HEURISTIC MISMATCH") })
	if out := dtx(t, bin, "admin", "in-doubt", "--http", c.http["inventory"]); !strings.Contains(string(out), `"mismatch": true`) {
		t.Fatalf("dtx admin in-doubt: %s", out)
	}
	if out := dtx(t, bin, "admin", "timeline", "byhand", "--http", c.http[twopc.CoordinatorID]); !strings.Contains(string(out), "HEURISTIC_MISMATCH") {
		t.Fatalf("dtx admin timeline: %s", out)
	}
}
