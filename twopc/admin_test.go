package twopc

import (
	"fmt"
	"slices"
	"testing"
)

// The operator's view of a coordinator: who each transaction waits for,
// who is in doubt, and what a retry resends.
func TestCoordinatorTransactionsAndRetry(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	c.Propose("t2", branches("k3", "k4"))
	take(&l, c)
	c.Tick()
	c.Step(vote("t1", "a", VoteYes, ""))
	take(&l, c)

	txs, n, inDoubt := c.Transactions(0)
	if len(txs) != 2 || txs[0].Tx != "t1" || n != 2 || inDoubt != 1 {
		t.Fatalf("want t1 and t2, t1 in doubt: %+v %d %d", txs, n, inDoubt)
	}
	if one, n, _ := c.Transactions(1); len(one) != 1 || one[0].Tx != "t1" || n != 2 {
		t.Fatalf("limit 1: want the oldest of 2: %+v %d", one, n)
	}
	t1 := txs[0]
	if t1.State != CoordCollecting || !slices.Equal(t1.Waiting, []string{"b"}) || !slices.Equal(t1.InDoubt, []string{"a"}) || t1.Ticks != 1 {
		t.Fatalf("t1: %+v", t1)
	}
	// Retry while collecting: PREPARE to the one that has not voted.
	sent, err := c.Retry("t1")
	rd := take(&l, c)
	if err != nil || !slices.Equal(sent, []string{"b"}) {
		t.Fatalf("retry t1: %v %v", sent, err)
	}
	if p := msgsOf(rd, MsgPrepare); len(p) != 1 || p[0].To != "b" || string(p[0].Op) != "k2" {
		t.Fatalf("want PREPARE to b with its op: %v", rd.Messages)
	}

	c.Step(vote("t1", "b", VoteYes, ""))
	take(&l, c)
	c.Step(Message{Type: MsgAck, From: "a", To: CoordinatorID, Tx: "t1", Attempt: 1})
	take(&l, c)
	txs, _, _ = c.Transactions(0)
	t1 = txs[slices.IndexFunc(txs, func(x TxInfo) bool { return x.Tx == "t1" })]
	if t1.State != CoordCommitting || !slices.Equal(t1.Waiting, []string{"b"}) || !slices.Equal(t1.InDoubt, []string{"b"}) {
		t.Fatalf("committing t1: %+v", t1)
	}
	// Retry while committing: COMMIT to the one that has not ACKed.
	sent, err = c.Retry("t1")
	rd = take(&l, c)
	if err != nil || !slices.Equal(sent, []string{"b"}) {
		t.Fatalf("retry t1: %v %v", sent, err)
	}
	if m := msgsOf(rd, MsgCommit); len(m) != 1 || m[0].To != "b" {
		t.Fatalf("want COMMIT to b: %v", rd.Messages)
	}
	c.Step(Message{Type: MsgAck, From: "b", To: CoordinatorID, Tx: "t1", Attempt: 1})
	take(&l, c)
	if _, err := c.Retry("t1"); err == nil {
		t.Fatal("a finished transaction has nothing to resend")
	}
	if _, err := c.Retry("ghost"); err == nil {
		t.Fatal("an unknown transaction has nothing to resend")
	}
}

// The wait-for graph shows the fresh edges between collecting
// transactions only.
func TestCoordinatorWaitGraph(t *testing.T) {
	var l memLog
	cfg := testCoordConfig()
	cfg.PrepareTimeout, cfg.WaitsTTL = 1000, 5
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	take(&l, c)
	c.Propose("t1", branches("k", "k"))
	c.Propose("t2", branches("k", "k"))
	take(&l, c)
	c.Step(Message{Type: MsgWaits, From: "a", To: CoordinatorID, Waits: []Wait{{Waiter: "t2", Holder: "t1", Age: 3}, {Waiter: "t2", Holder: "gone", Age: 1}}})
	take(&l, c)
	g := c.WaitGraph()
	if len(g) != 1 || g[0] != (WaitEdge{Waiter: "t2", Holder: "t1", Node: "a", Ticks: 3}) {
		t.Fatalf("graph: %+v", g)
	}
	for range 5 {
		c.Tick()
	}
	if g := c.WaitGraph(); len(g) != 1 || g[0].Ticks != 8 {
		t.Fatalf("a report ages with the coordinator's clock: %+v", g)
	}
	c.Tick() // past WaitsTTL
	if g := c.WaitGraph(); len(g) != 0 {
		t.Fatalf("a stale report must not show: %+v", g)
	}
}

// ResendAbort resends ABORT, with the first reason and attempt, for an
// aborted transaction only.
func TestCoordinatorResendAbort(t *testing.T) {
	var l memLog
	c := mustCoord(t, &l)
	take(&l, c)
	c.Propose("t1", branches("k1", "k2"))
	c.Step(vote("t1", "a", VoteNo, "no stock"))
	take(&l, c)
	sent, err := c.ResendAbort("t1", []string{"b", "b", CoordinatorID})
	rd := take(&l, c)
	if err != nil || !slices.Equal(sent, []string{"b"}) {
		t.Fatalf("resend: %v %v", sent, err)
	}
	if m := msgsOf(rd, MsgAbort); len(m) != 1 || m[0].To != "b" || m[0].Reason != "a: no stock" || m[0].Attempt != 1 {
		t.Fatalf("want ABORT to b with the first reason: %v", rd.Messages)
	}
	c.Propose("t2", branches("k1", "k2"))
	take(&l, c)
	if _, err := c.ResendAbort("t2", []string{"a"}); err == nil {
		t.Fatal("a transaction in flight has no ABORT to resend")
	}
	c.Step(vote("t2", "a", VoteYes, ""))
	c.Step(vote("t2", "b", VoteYes, ""))
	take(&l, c)
	if _, err := c.ResendAbort("t2", []string{"a"}); err == nil {
		t.Fatal("a committed transaction has no ABORT to resend")
	}
}

// BenchmarkTransactionsList: what the console's poll of the oldest 200
// transactions costs the coordinator's loop with 10,000 in flight.
func BenchmarkTransactionsList(b *testing.B) {
	var l memLog
	cfg := testCoordConfig()
	cfg.MaxInflight, cfg.PrepareTimeout = 0, 1<<40
	c, err := NewCoordinator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	c.Start()
	for i := range 10000 {
		if err := c.Propose(fmt.Sprintf("tx-%05d", i), branches("k1", "k2", "k3")); err != nil {
			b.Fatal(err)
		}
		if i%100 == 0 {
			c.Tick()
		}
	}
	take(&l, c)
	b.ResetTimer()
	for b.Loop() {
		if txs, n, _ := c.Transactions(200); len(txs) != 200 || n != 10000 {
			b.Fatal(len(txs), n)
		}
	}
}

// The oldest limit transactions are the first limit of the whole list.
func TestCoordinatorTransactionsLimit(t *testing.T) {
	var l memLog
	cfg := testCoordConfig()
	cfg.PrepareTimeout = 1000
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	for i := range 60 {
		c.Propose(fmt.Sprintf("t%02d", (i*37)%60), branches("k1"))
		if i%7 == 0 {
			c.Tick()
		}
	}
	take(&l, c)
	all, n, _ := c.Transactions(0)
	if n != 60 || len(all) != 60 {
		t.Fatalf("want 60: %d %d", n, len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Ticks < all[i].Ticks || all[i-1].Ticks == all[i].Ticks && all[i-1].Tx > all[i].Tx {
			t.Fatalf("not oldest first at %d: %+v %+v", i, all[i-1], all[i])
		}
	}
	for _, k := range []int{1, 2, 5, 13, 59, 60, 61} {
		got, _, _ := c.Transactions(k)
		want := all[:min(k, 60)]
		if len(got) != len(want) {
			t.Fatalf("limit %d: %d", k, len(got))
		}
		for i := range got {
			if got[i].Tx != want[i].Tx {
				t.Fatalf("limit %d: at %d %s, want %s", k, i, got[i].Tx, want[i].Tx)
			}
		}
	}
}
