package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/twopc"
)

// TestParticipants: a transaction has as many branches as asked (4
// messages each: PREPARE, VOTE, COMMIT, ACK) and a count outside 1..3 is
// refused with a message naming the services.
func TestParticipants(t *testing.T) {
	for _, k := range []int{1, 2, 3} {
		r, err := Run(context.Background(), Config{Dir: t.TempDir(), Concurrency: 4, Duration: 300 * time.Millisecond,
			HotKeys: 1000, Deadlock: twopc.DeadlockDetect, Participants: k, Seed: 1})
		if err != nil {
			t.Fatalf("%d participants: %v", k, err)
		}
		// (A rare COMMIT resend under a loaded CI machine adds a little;
		// ACKs of the last transactions, which wait for their forced
		// COMMITTED, may fall after the measured window and take a little.)
		if r.Committed == 0 || r.MsgsPerTx <= float64(4*k)-0.5 || r.MsgsPerTx >= float64(4*k+1) {
			t.Fatalf("%d participants: %d committed, %.2f messages per transaction, want > 0 and about %d", k, r.Committed, r.MsgsPerTx, 4*k)
		}
	}
	for _, k := range []int{-1, 4} {
		_, err := Run(context.Background(), Config{Dir: t.TempDir(), Concurrency: 1, Duration: time.Second, HotKeys: 1, Participants: k})
		if err == nil || !strings.Contains(err.Error(), "inventory, payment, order") {
			t.Fatalf("%d participants: err %v, want a refusal naming the services", k, err)
		}
	}
}
