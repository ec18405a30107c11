package node

import (
	"context"
	"flag"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

var seedFlag = flag.Uint64("seed", 0, "seed for TestReleaseOrder (0: random)")

// scripted is a Machine whose every step adds a prepared Ready's work to
// its next Ready (the message's Tx is the prepared Ready's index), as a
// real machine adds the work of every message stepped in one turn.
type scripted struct {
	readies []twopc.Ready
	cur     twopc.Ready
	steps   atomic.Int64
}

func (s *scripted) Step(m twopc.Message) {
	i, _ := strconv.Atoi(m.Tx)
	r := &s.readies[i]
	s.cur.Records = append(s.cur.Records, r.Records...)
	s.cur.Messages = append(s.cur.Messages, r.Messages...)
	s.cur.Outcomes = append(s.cur.Outcomes, r.Outcomes...)
	s.steps.Add(1)
}
func (s *scripted) Tick()              {}
func (s *scripted) HasReady() bool     { return !s.cur.Empty() }
func (s *scripted) Ready() twopc.Ready { return s.cur }
func (s *scripted) Advance()           { s.cur = twopc.Ready{} }

// sent is one message as the transport saw it.
type sent struct {
	ready   int
	durable uint64
}

type recorder struct {
	log  *wal.Log
	mu   sync.Mutex
	sent []sent
	outs []sent
}

func (r *recorder) Send(msgs []twopc.Message) {
	d := r.log.DurableSeq()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		i, _ := strconv.Atoi(m.Reason)
		r.sent = append(r.sent, sent{i, d})
	}
}

// TestReleaseOrder: (1) no message or outcome of a Ready that must be
// synced leaves before every record appended up to it is durable (even a
// Ready with an outcome and no record of its own), (2) no message leaves
// before the forced records of earlier Readies are durable (it may depend
// on them), and (3) messages and outcomes leave in the order the machine
// produced them. Readies are random: forced records, unforced ones, none;
// messages, outcomes, both, neither; one per turn of the loop or several
// merged.
func TestReleaseOrder(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	const n = 400
	m := &scripted{readies: make([]twopc.Ready, n)}
	need := make([]uint64, n) // what must be durable before Ready i's messages leave
	var total, lastForced uint64
	for i := range m.readies {
		rd := &m.readies[i]
		for range rng.IntN(3) {
			rd.Records = append(rd.Records, twopc.Record{Type: twopc.RecEvent, Tx: "t", Reason: "r", Force: rng.IntN(3) == 0})
		}
		total += uint64(len(rd.Records))
		for range rng.IntN(3) {
			rd.Messages = append(rd.Messages, twopc.Message{Type: twopc.MsgVote, To: "x", Tx: "t", Reason: strconv.Itoa(i)})
		}
		if rng.IntN(4) == 0 {
			rd.Outcomes = []twopc.Outcome{{Tx: strconv.Itoa(i)}}
		}
		// A message may depend on any earlier forced record: it waits
		// for the last one (and its own Ready's records, if forced).
		if rd.MustSync() {
			lastForced = total
		}
		need[i] = lastForced
	}
	log, err := wal.Open(wal.Config{Dir: "log", FS: wal.NewMemFS(seed), SegmentSize: 1 << 20, MaxRecordSize: 1 << 16, BufferSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	rec := &recorder{log: log}
	var outMu sync.Mutex
	var outs []sent
	nd, err := New(Config{ID: "n", Log: log, Transport: rec, Tick: time.Millisecond, OnOutcomes: func(os []twopc.Outcome) {
		d := log.DurableSeq()
		outMu.Lock()
		defer outMu.Unlock()
		for _, o := range os {
			i, _ := strconv.Atoi(o.Tx)
			outs = append(outs, sent{i, d})
		}
	}}, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nd.Run(ctx) }()
	for i := range n {
		nd.Inbox() <- []twopc.Message{{Tx: strconv.Itoa(i)}}
		// Mostly one Ready per turn of the loop; sometimes several
		// pile up and are merged, as under load.
		if rng.IntN(4) != 0 {
			for m.steps.Load() <= int64(i) {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	for m.steps.Load() < n {
		time.Sleep(100 * time.Microsecond)
	}
	// Every Ready was handed out (the next turn flushes the last one);
	// Run syncs and lets out what still waits before it returns.
	nd.Do(context.Background(), make(chan struct{}), func() {})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("seed %d: Run: %v", seed, err)
	}
	check := func(what string, got []sent, want int) {
		if len(got) != want {
			t.Fatalf("seed %d: %d %s sent, want %d", seed, len(got), what, want)
		}
		for k, s := range got {
			if s.durable < need[s.ready] {
				t.Fatalf("seed %d: %s of ready %d left with the log durable to %d, before its records (%d)", seed, what, s.ready, s.durable, need[s.ready])
			}
			if k > 0 && got[k-1].ready > s.ready {
				t.Fatalf("seed %d: %s of ready %d left before one of ready %d", seed, what, got[k-1].ready, s.ready)
			}
		}
	}
	wantMsgs, wantOuts := 0, 0
	for i := range m.readies {
		wantMsgs += len(m.readies[i].Messages)
		wantOuts += len(m.readies[i].Outcomes)
	}
	check("message", rec.sent, wantMsgs)
	check("outcome", outs, wantOuts)
	if d := log.DurableSeq(); d < slices.Max(need) {
		t.Fatalf("seed %d: durable %d after Run, want at least %d", seed, d, slices.Max(need))
	}
}
