package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/twopc"
)

// newOrder returns a request of tx by user for lines, in the items form.
func newOrder(tx, user string, lines ...purchase.LineItem) purchase.Request {
	r := purchase.Request{TxID: tx, UserID: user, Items: lines, Card: purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2099}}
	for _, l := range lines {
		r.Amount += l.Price * money.Cents(l.Quantity)
	}
	return r
}

// genMultiRequests returns n requests over items i0..i<items-1>: most list
// 2 to 4 of them in a random order (so that two orders often lock the same
// items in opposite orders and deadlock inside the inventory), some one
// item; a few also ask for "gone", which has no stock (the whole order
// must roll back), and a few resubmit an earlier transaction id.
func genMultiRequests(rng *rand.Rand, n, items, buyers int) []purchase.Request {
	reqs := make([]purchase.Request, n)
	for i := range reqs {
		k := 1
		if rng.IntN(5) > 0 {
			k = 2 + rng.IntN(min(3, items-1))
		}
		var lines []purchase.LineItem
		for _, j := range rng.Perm(items)[:k] {
			lines = append(lines, purchase.LineItem{
				ItemID: fmt.Sprintf("i%d", j), Quantity: 1 + rng.Int64N(3), Price: money.Cents(100 + rng.IntN(10_000)),
			})
		}
		if rng.IntN(30) == 0 {
			at := rng.IntN(len(lines) + 1)
			lines = append(lines[:at], append([]purchase.LineItem{{ItemID: "gone", Quantity: 1, Price: 100}}, lines[at:]...)...)
		}
		id := fmt.Sprintf("tx%d", i)
		if i > 0 && rng.IntN(40) == 0 {
			reqs[i] = reqs[rng.IntN(i)] // a resubmission
			continue
		}
		reqs[i] = newOrder(id, fmt.Sprintf("u%d", rng.IntN(buyers)), lines...)
	}
	return reqs
}

// checkMultiItem checks the committed orders item by item, beyond what
// Check and checkOutcomes do: every committed transaction's order record,
// reservation and charge hold exactly the request's items and total, and
// each item's sold count is the sum over the committed orders.
func checkMultiItem(t *testing.T, st *State, outs []outcome, w purchase.World) {
	t.Helper()
	sold := map[string]int64{}
	done := map[string]bool{}
	for _, o := range outs {
		if !o.Committed || done[o.Tx] {
			continue
		}
		done[o.Tx] = true
		req := o.req
		ord := st.Order.Orders[o.Tx]
		res := st.Inventory.Reservations[o.Tx]
		charge := st.Payment.Charges[o.Tx]
		wantRes := make([]inventory.ReservedItem, len(req.Items))
		for i, l := range req.Items {
			wantRes[i] = inventory.ReservedItem{ItemID: l.ItemID, Quantity: l.Quantity}
			sold[l.ItemID] += l.Quantity
		}
		if !reflect.DeepEqual(ord.Items, req.Items) || ord.Amount != req.Amount || ord.UserID != req.UserID {
			t.Errorf("%s: order %+v, request %+v", o.Tx, ord, req)
		}
		if !reflect.DeepEqual(res.Items, wantRes) {
			t.Errorf("%s: reservation %+v, want %+v", o.Tx, res.Items, wantRes)
		}
		if charge.Amount != req.Amount || charge.UserID != req.UserID {
			t.Errorf("%s: charge %+v, request total %v of %s", o.Tx, charge, req.Amount, req.UserID)
		}
	}
	for id, it := range st.Inventory.Items {
		if it.Sold != sold[id] || it.Reserved != 0 || it.Available != w.Items[id].Stock-sold[id] {
			t.Errorf("item %s: %+v, but the committed orders took %d", id, it, sold[id])
		}
	}
}

// mustOpen opens an engine (Open returns once every loop serves).
func mustOpen(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// reasonKind is the start of a rollback reason, up to the first detail
// (a transaction id or a number), to count reasons by kind.
func reasonKind(r string) string {
	words := strings.Fields(r)
	for i, w := range words {
		if i == 4 || strings.ContainsAny(w, "0123456789") {
			return strings.Join(words[:i], " ")
		}
	}
	return r
}

// TestEngineMultiItemDeadlocks runs concurrent multi-item orders over four
// hot items, each listing its items in a random order, under every
// deadlock policy with a short lock timeout: deadlocks arise inside the
// inventory alone, and every one must be resolved, every order must be
// atomic as a whole, and the state must survive a restart.
func TestEngineMultiItemDeadlocks(t *testing.T) {
	for _, policy := range []twopc.DeadlockPolicy{twopc.DeadlockDetect, twopc.DeadlockWoundWait, twopc.DeadlockTimeout} {
		t.Run(policy.String(), func(t *testing.T) {
			seed := testSeed(t)
			rng := rand.New(rand.NewPCG(seed, 2))
			n := 1200
			if testing.Short() {
				n = 300
			}
			const items, buyers = 4, 64
			w := hotWorld(items, buyers)
			w.Items["gone"] = purchase.Item{Stock: 0}
			cfg := DefaultConfig(t.TempDir())
			cfg.World = &w
			cfg.Deadlock = policy
			cfg.LockTimeout = 40 * time.Millisecond
			cfg.PrepareTimeout = 2 * time.Second // rollbacks come from locks, not from slow votes
			cfg.CommitRetry = 10 * time.Millisecond
			cfg.Faults = participant.Faults{Seed: seed}
			e := mustOpen(t, cfg)
			reqs := genMultiRequests(rng, n, items, buyers)
			outs := submitAll(t, e, reqs, 16)
			st := settle(t, e)
			checkOutcomes(t, &st, outs)
			checkMultiItem(t, &st, outs, w)

			committed, lockAborts, gone := 0, 0, 0
			reasons := map[string]int{}
			for _, o := range outs {
				if o.Duplicate {
					continue
				}
				if o.Committed {
					committed++
					continue
				}
				r := o.Reason
				switch {
				case strings.Contains(r, "deadlock") || strings.Contains(r, "lock timeout"):
					lockAborts++
				case strings.Contains(r, "insufficient stock for gone"):
					gone++
				}
				reasons[reasonKind(r)]++
			}
			for _, o := range outs {
				if o.Committed {
					for _, l := range o.req.Items {
						if l.ItemID == "gone" {
							t.Errorf("%s committed with an item out of stock", o.Tx)
						}
					}
				}
			}
			ds, err := e.DeadlockStats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("seed %d, %s: %d requests, %d committed, %d rolled back for locks, %d for the item out of stock, %d deadlock victims restarted; reasons: %v",
				seed, policy, n, committed, lockAborts, gone, ds.Restarts, reasons)
			if committed < n/20 { // liveness: most orders contend on the four items
				t.Errorf("only %d of %d committed", committed, n)
			}
			// Deadlock victims are restarted (and usually commit); lock
			// timeouts are rolled back.
			if lockAborts == 0 && ds.Restarts == 0 {
				t.Errorf("no rollback for a deadlock or a lock timeout and no restart: the workload does not contend")
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			// The logs alone give back the same state.
			e2, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer e2.Close()
			st2 := settle(t, e2)
			if !reflect.DeepEqual(st.Inventory, st2.Inventory) || !reflect.DeepEqual(st.Payment, st2.Payment) || !reflect.DeepEqual(st.Order, st2.Order) {
				t.Fatalf("state after reopening differs from state before")
			}
		})
	}
}

// TestEngineMultiItemUnderFaults runs multi-item orders with service
// failures and crashes, so that multi-item branches are recovered from the
// log in doubt, and checks every outcome against the state.
func TestEngineMultiItemUnderFaults(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	n := 1500
	if testing.Short() {
		n = 400
	}
	const items, buyers = 16, 32
	w := hotWorld(items, buyers)
	w.Items["gone"] = purchase.Item{Stock: 0}
	cfg := DefaultConfig(t.TempDir())
	cfg.World = &w
	cfg.PrepareTimeout = 150 * time.Millisecond
	cfg.LockTimeout = 50 * time.Millisecond
	cfg.CommitRetry = 10 * time.Millisecond
	cfg.Faults = participant.Faults{FailRate: 0.03, SlowRate: 0.01, CrashRate: 0.01, Downtime: 5 * time.Millisecond, Seed: seed}
	e := mustOpen(t, cfg)
	defer e.Close()
	outs := submitAll(t, e, genMultiRequests(rng, n, items, buyers), 16)
	st := settle(t, e)
	checkOutcomes(t, &st, outs)
	checkMultiItem(t, &st, outs, w)
	committed := 0
	reasons := map[string]int{}
	for _, o := range outs {
		switch {
		case o.Duplicate:
		case o.Committed:
			committed++
		default:
			reasons[reasonKind(o.Reason)]++
		}
	}
	t.Logf("seed %d: %d requests, %d committed, %d crashes; rollbacks: %v", seed, n, committed, e.Crashes(), reasons)
	if committed < n/10 {
		t.Errorf("only %d of %d committed", committed, n)
	}
}

// TestEngineMultiItemAllOrNothing checks, one order at a time, that an
// order with one item short rolls back whole, and that the same order
// with enough stock commits whole.
func TestEngineMultiItemAllOrNothing(t *testing.T) {
	w := purchase.World{
		Items:    map[string]purchase.Item{"a": {Stock: 5}, "b": {Stock: 1}},
		Accounts: map[string]purchase.Account{"u": {Balance: 100_00}},
	}
	cfg := DefaultConfig(t.TempDir())
	cfg.World = &w
	cfg.PrepareTimeout = 20 * time.Second // exact reasons: no timeout, even on a loaded machine
	cfg.LockTimeout = 10 * time.Second
	e := mustOpen(t, cfg)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	submit := func(r purchase.Request) twopc.Outcome {
		t.Helper()
		o, err := e.Submit(ctx, &r)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	a2 := purchase.LineItem{ItemID: "a", Quantity: 2, Price: 1000}
	if o := submit(newOrder("t1", "u", a2, purchase.LineItem{ItemID: "b", Quantity: 2, Price: 500})); o.Committed ||
		o.Reason != "inventory: insufficient stock for b: 1 available, 2 requested" {
		t.Fatalf("t1: %+v", o)
	}
	if o := submit(newOrder("t2", "u", purchase.LineItem{ItemID: "b", Quantity: 1, Price: 500}, purchase.LineItem{ItemID: "c", Quantity: 1, Price: 1})); o.Committed ||
		o.Reason != "inventory: unknown item c" {
		t.Fatalf("t2: %+v", o)
	}
	if o := submit(newOrder("t3", "u", purchase.LineItem{ItemID: "b", Quantity: 1, Price: 500}, purchase.LineItem{ItemID: "a", Quantity: 5, Price: 1901})); o.Committed ||
		o.Reason != "payment: insufficient funds for u: balance 100.00, amount 100.05" {
		t.Fatalf("t3: %+v", o)
	}
	if err := e.WaitQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := e.State(ctx)
	if st.Inventory.Items["a"] != (inventory.Item{Stock: 5, Available: 5}) || st.Inventory.Items["b"] != (inventory.Item{Stock: 1, Available: 1}) {
		t.Fatalf("rolled-back orders left a mark: %+v", st.Inventory.Items)
	}
	if o := submit(newOrder("t4", "u", a2, purchase.LineItem{ItemID: "b", Quantity: 1, Price: 500})); !o.Committed {
		t.Fatalf("t4: %+v", o)
	}
	if err := e.WaitQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ = e.State(ctx)
	if st.Inventory.Items["a"] != (inventory.Item{Stock: 5, Available: 3, Sold: 2}) || st.Inventory.Items["b"] != (inventory.Item{Stock: 1, Sold: 1}) {
		t.Fatalf("after t4: %+v", st.Inventory.Items)
	}
	if a := st.Payment.Accounts["u"]; a.Balance != 75_00 || a.Captured != 25_00 {
		t.Fatalf("after t4: %+v", a)
	}
	if ord := st.Order.Orders["t4"]; len(ord.Items) != 2 || ord.Amount != 25_00 {
		t.Fatalf("order t4: %+v", ord)
	}
	for _, tx := range []string{"t1", "t2", "t3"} {
		_, o := st.Order.Orders[tx]
		_, r := st.Inventory.Reservations[tx]
		_, c := st.Payment.Charges[tx]
		if o || r || c {
			t.Errorf("%s rolled back but is in the state (order %v, inventory %v, payment %v)", tx, o, r, c)
		}
	}
	// An order naming an item twice is refused before it is sent.
	bad := newOrder("t5", "u", a2, a2)
	if _, err := e.Submit(ctx, &bad); err == nil || err.Error() != "items[1].item_id: same as items[0].item_id" {
		t.Fatalf("Submit of an item twice: %v", err)
	}
}
