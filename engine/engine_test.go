package engine

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the randomized engine tests (0: from the clock)")

func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if s := os.Getenv("DTX_SEED"); seed == 0 && s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (replay with -seed %d or DTX_SEED=%d)", seed, seed, seed)
		}
	})
	return seed
}

// hotWorld has few items and buyers, so that transactions contend.
func hotWorld(items, buyers int) purchase.World {
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range items {
		w.Items[fmt.Sprintf("i%d", i)] = purchase.Item{Stock: 1_000_000}
	}
	for u := range buyers {
		w.Accounts[fmt.Sprintf("u%d", u)] = purchase.Account{Balance: money.Cents(1_000_000_000_00)}
	}
	return w
}

func genRequests(rng *rand.Rand, n, items, buyers int) []purchase.Request {
	reqs := make([]purchase.Request, n)
	for i := range reqs {
		q := int64(1 + rng.IntN(5))
		price := money.Cents(100 + rng.IntN(50_000))
		item := fmt.Sprintf("i%d", rng.IntN(items))
		if rng.IntN(50) == 0 {
			item = "nosuchitem"
		}
		id := fmt.Sprintf("tx%d", i)
		if i > 0 && rng.IntN(40) == 0 {
			id = fmt.Sprintf("tx%d", rng.IntN(i)) // a resubmission
		}
		reqs[i] = purchase.Request{
			TxID: id, UserID: fmt.Sprintf("u%d", rng.IntN(buyers)), ItemID: item,
			Quantity: q, Price: price, Amount: price * money.Cents(q),
			Card: purchase.Card{Last4: "1111", ExpMonth: 12, ExpYear: 2099},
		}
	}
	return reqs
}

type outcome struct {
	twopc.Outcome
	req purchase.Request
}

func submitAll(t *testing.T, e *Engine, reqs []purchase.Request, conc int) []outcome {
	t.Helper()
	out := make([]outcome, len(reqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				o, err := e.Submit(ctx, &reqs[i])
				cancel()
				if err != nil {
					t.Errorf("submit %s: %v", reqs[i].TxID, err)
					continue
				}
				out[i] = outcome{o, reqs[i]}
			}
		}()
	}
	for i := range reqs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// checkOutcomes checks that every outcome a client heard is the state:
// committed ones are at all three services, rolled-back ones at none, and
// duplicates agree with the first outcome.
func checkOutcomes(t *testing.T, st *State, outs []outcome) {
	t.Helper()
	first := map[string]bool{}
	originals := map[string]int{}
	for _, o := range outs {
		if o.Tx == "" {
			continue
		}
		if !o.Duplicate {
			originals[o.Tx]++
		}
		if c, ok := first[o.Tx]; ok {
			if c != o.Committed {
				t.Errorf("%s: outcomes disagree between submissions", o.Tx)
			}
		} else {
			first[o.Tx] = o.Committed
		}
		_, inOrder := st.Order.Orders[o.Tx]
		_, inInv := st.Inventory.Reservations[o.Tx]
		_, inPay := st.Payment.Charges[o.Tx]
		if o.Committed != inOrder || o.Committed != inInv || o.Committed != inPay {
			t.Errorf("%s: client heard committed=%v (%q) but order=%v inventory=%v payment=%v",
				o.Tx, o.Committed, o.Reason, inOrder, inInv, inPay)
		}
	}
	for tx := range first {
		if originals[tx] != 1 {
			t.Errorf("%s: %d submissions not marked duplicate, want exactly 1", tx, originals[tx])
		}
	}
	if len(st.Order.Orders) > len(first) {
		t.Errorf("%d orders for %d distinct transactions", len(st.Order.Orders), len(first))
	}
}

// settle waits until nothing is unfinished, checks every invariant of the
// services and across them, and returns the state.
func settle(t *testing.T, e *Engine) State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.WaitQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := e.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestEngineConcurrentPurchasesUnderFaults(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	n := 3000
	if testing.Short() {
		n = 600
	}
	dir := t.TempDir()
	w := hotWorld(32, 64)
	cfg := DefaultConfig(dir)
	cfg.World = &w
	cfg.PrepareTimeout = 300 * time.Millisecond
	cfg.LockTimeout = 100 * time.Millisecond
	cfg.CommitRetry = 10 * time.Millisecond
	cfg.Faults = participant.Faults{FailRate: 0.05, SlowRate: 0.01, CrashRate: 0.01, Downtime: 5 * time.Millisecond, Seed: seed}
	cfg.Deadlock = twopc.DeadlockPolicy(1 + seed%3)
	t.Logf("deadlock policy %v", cfg.Deadlock)
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reqs := genRequests(rng, n, 32, 64)
	outs := submitAll(t, e, reqs, 64)
	st := settle(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	checkOutcomes(t, &st, outs)
	committed := 0
	for _, o := range outs {
		if o.Committed && !o.Duplicate {
			committed++
		}
	}
	reasons := map[string]int{}
	for _, o := range outs {
		if !o.Committed {
			r := o.Reason
			if len(r) > 30 {
				r = r[:30]
			}
			reasons[r]++
		}
	}
	t.Logf("seed %d: %d requests, %d committed, %d crashes; rollbacks: %v", seed, n, committed, e.Crashes(), reasons)
	if committed < n/10 { // wall-clock timeouts: a loaded CI machine commits fewer
		t.Errorf("only %d of %d committed: the workload is not exercising commits", committed, n)
	}
	if e.Crashes() == 0 {
		t.Errorf("no simulated crash happened")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Durability: the logs alone give back the same state.
	cfg.Faults = participant.Faults{}
	e2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	st2 := settle(t, e2)
	st.Coordinator, st2.Coordinator = CoordStatus{}, CoordStatus{}
	if !reflect.DeepEqual(st.Inventory, st2.Inventory) || !reflect.DeepEqual(st.Payment, st2.Payment) || !reflect.DeepEqual(st.Order, st2.Order) {
		t.Fatalf("state after reopening differs from state before")
	}
	// Resubmitting every request runs nothing again.
	again := submitAll(t, e2, reqs[:200], 16)
	for i, o := range again {
		if !o.Duplicate {
			t.Fatalf("%s: resubmission after restart was run again", reqs[i].TxID)
		}
	}
	st3, _ := e2.State(ctx)
	if len(st3.Order.Orders) != len(st2.Order.Orders) {
		t.Fatalf("resubmissions changed the state")
	}
}

func TestEngineIsolationNoOversell(t *testing.T) {
	seed := testSeed(t)
	dir := t.TempDir()
	// One item with 50 in stock, one buyer with money for 30: 200 buyers of
	// one unit each race for it.
	w := purchase.World{
		Items:    map[string]purchase.Item{"hot": {Stock: 50}},
		Accounts: map[string]purchase.Account{"u": {Balance: 30 * 100}, "v": {Balance: 1_000_000}},
	}
	cfg := DefaultConfig(dir)
	cfg.World = &w
	cfg.LockTimeout = 10 * time.Second // no rollback for waiting alone: all 50 must sell
	cfg.PrepareTimeout = 20 * time.Second
	cfg.Faults = participant.Faults{Seed: seed}
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var reqs []purchase.Request
	for i := range 200 {
		user := "u"
		if i%2 == 1 {
			user = "v"
		}
		reqs = append(reqs, purchase.Request{TxID: fmt.Sprintf("r%d", i), UserID: user, ItemID: "hot", Quantity: 1,
			Price: 100, Amount: 100, Card: purchase.Card{Last4: "4242", ExpMonth: 1, ExpYear: 2098}})
	}
	outs := submitAll(t, e, reqs, 100)
	ctx := context.Background()
	if err := e.WaitQuiet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := e.State(ctx)
	checkOutcomes(t, &st, outs)
	it := st.Inventory.Items["hot"]
	if it.Sold > 50 || it.Available < 0 {
		t.Fatalf("oversold: %+v", it)
	}
	if a := st.Payment.Accounts["u"]; a.Balance < 0 || a.Captured > 30*100 {
		t.Fatalf("overdrawn: %+v", a)
	}
	if it.Sold != 50 {
		t.Fatalf("sold %d, want all 50 (200 buyers, enough money)", it.Sold)
	}
}

func TestEngineRefusesSecondProcessAndOtherWorld(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(DefaultConfig(dir)); err == nil {
		t.Fatal("a second engine on the same directory must be refused")
	}
	e.Close()
	w := hotWorld(1, 1)
	cfg := DefaultConfig(dir)
	cfg.World = &w
	if _, err := Open(cfg); err == nil {
		t.Fatal("a different world on an existing directory must be refused")
	}
}
