package replica

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// holdGroup starts three replicas on a memory transport with their raft
// logs in memory and returns the leader and a Log of its leadership that
// holds unforced records for hold ticks.
func holdGroup(t *testing.T, hold int) (*Replica, *Log) {
	t.Helper()
	rt := NewMemTransport()
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	ids := []uint64{1, 2, 3}
	ctx, cancel := context.WithCancel(context.Background())
	var reps []*Replica
	for _, id := range ids {
		r, err := New(Config{ID: id, Peers: ids, Transport: rt, Tick: 5 * time.Millisecond,
			Coordinator: coordinatorConfig(twopc.DefaultCoordinatorConfig(), net), HoldTicks: hold})
		if err != nil {
			t.Fatal(err)
		}
		rt.Attach(id, r)
		reps = append(reps, r)
		go r.Run(ctx)
	}
	t.Cleanup(func() {
		cancel()
		for _, r := range reps {
			<-r.Done()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range reps {
			if r.Status().Serving {
				r.mu.Lock()
				run := r.mu.run
				r.mu.Unlock()
				return r, r.newLog(run)
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no leader serves after 10s")
	return nil, nil
}

// entriesWith returns the data of every entry of r's raft log that holds
// a record whose bytes contain mark.
func entriesWith(t *testing.T, r *Replica, mark []byte) [][]byte {
	t.Helper()
	first, _ := r.st.FirstIndex()
	last, _ := r.st.LastIndex()
	ents, err := r.st.Entries(first, last+1, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		found := false
		_ = eachRecord(e.GetData(), func(_ uint8, rec []byte) error {
			found = found || bytes.Contains(rec, mark)
			return nil
		})
		if found {
			out = append(out, e.GetData())
		}
	}
	return out
}

// recordsOf returns the reasons of the records of an entry's data (the
// marks of event's records).
func recordsOf(data []byte) []string {
	var out []string
	_ = eachRecord(data, func(typ uint8, b []byte) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(typ), b)
		if err != nil {
			out = append(out, fmt.Sprintf("undecodable: %v", err))
			return nil
		}
		out = append(out, rec.Reason)
		return nil
	})
	return out
}

// event is an EVENT record (every replica applies the records it
// commits, so they must decode) whose reason is s.
func event(s string) wal.Entry {
	return wal.Entry{Type: uint8(twopc.RecEvent), Data: twopc.AppendRecord(nil, &twopc.Record{Type: twopc.RecEvent, Reason: s})}
}

// An unforced record is not proposed alone: the next forced append
// carries it, in the same raft entry and before the forced record.
func TestLogHoldsUnforcedUntilForced(t *testing.T) {
	lead, l := holdGroup(t, 1000)
	if _, err := l.AppendNoSync(event("held-begin-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendNoSync(event("held-ack-1")); err != nil {
		t.Fatal(err)
	}
	if l.Held() != 2 {
		t.Fatalf("Held() = %d after two unforced appends, want 2", l.Held())
	}
	for range 5 {
		if err := l.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if got := entriesWith(t, lead, []byte("held-")); len(got) != 0 {
		t.Fatalf("unforced records reached the raft log before a forced append or their hold ran out: %q", recordsOf(got[0]))
	}
	if _, err := l.Append(event("held-commit-1")); err != nil {
		t.Fatal(err)
	}
	if l.Held() != 0 {
		t.Fatalf("Held() = %d after a forced append, want 0", l.Held())
	}
	got := entriesWith(t, lead, []byte("held-"))
	if len(got) != 1 {
		t.Fatalf("the three records are in %d raft entries, want one", len(got))
	}
	want := []string{"held-begin-1", "held-ack-1", "held-commit-1"}
	if recs := recordsOf(got[0]); len(recs) != 3 || recs[0] != want[0] || recs[1] != want[1] || recs[2] != want[2] {
		t.Fatalf("entry holds %q, want %q in that order", recs, want)
	}
}

// Records held back leave on their own after HoldTicks machine ticks, so
// a leader with no forced append to come still replicates them.
func TestLogHoldEndsAfterHoldTicks(t *testing.T) {
	lead, l := holdGroup(t, 3)
	if _, err := l.AppendNoSync(event("tick-end-1")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := l.Tick(); err != nil {
			t.Fatal(err)
		}
		if l.Held() != 1 {
			t.Fatalf("after %d ticks of 3: Held() = %d, want 1", i+1, l.Held())
		}
	}
	if err := l.Tick(); err != nil {
		t.Fatal(err)
	}
	if l.Held() != 0 {
		t.Fatalf("after 3 ticks of 3: Held() = %d, want 0 (proposed)", l.Held())
	}
	// An empty forced append waits for everything proposed before it.
	if _, err := l.Append(); err != nil {
		t.Fatal(err)
	}
	if got := entriesWith(t, lead, []byte("tick-end-1")); len(got) != 1 {
		t.Fatalf("the held record is in %d raft entries after its hold ran out, want 1", len(got))
	}
	if st := lead.Status(); st.Commit < st.Applied || st.Applied == 0 {
		t.Fatalf("status %+v after the append", st)
	}
}

// A decision is never held: an unforced ABORT waits for the group, and
// takes the records held before it along.
func TestLogNeverHoldsADecision(t *testing.T) {
	lead, l := holdGroup(t, 1000)
	if _, err := l.AppendNoSync(event("dec-begin-1")); err != nil {
		t.Fatal(err)
	}
	abort := twopc.AppendRecord(nil, &twopc.Record{Type: twopc.RecAbort, Tx: "dec-tx-1", Attempt: 1})
	if _, err := l.AppendNoSync(wal.Entry{Type: uint8(twopc.RecAbort), Data: abort}); err != nil {
		t.Fatal(err)
	}
	if l.Held() != 0 {
		t.Fatalf("Held() = %d after an unforced ABORT, want 0", l.Held())
	}
	if len(l.pending) != 0 {
		t.Fatalf("AppendNoSync of an ABORT returned with %d proposals not committed", len(l.pending))
	}
	if got := entriesWith(t, lead, []byte("dec-")); len(got) != 1 || len(recordsOf(got[0])) != 2 {
		t.Fatalf("want the held record and the ABORT in one committed entry, got %d entries", len(got))
	}
}
