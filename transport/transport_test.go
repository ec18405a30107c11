package transport

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
)

func TestByDestinationKeepsOrderAndEveryMessage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 50 {
		var msgs []twopc.Message
		for i := range n {
			msgs = append(msgs, twopc.Message{To: fmt.Sprint("n", rng.IntN(4)), Tx: fmt.Sprint(i)})
		}
		orig := slices.Clone(msgs)
		var order []string
		got := map[string][]twopc.Message{}
		ByDestination(msgs, func(to string, b []twopc.Message) {
			if _, ok := got[to]; ok {
				t.Fatalf("destination %s called twice", to)
			}
			order = append(order, to)
			got[to] = b
		})
		total := 0
		for to, b := range got {
			var want []twopc.Message
			for _, m := range orig {
				if m.To == to {
					want = append(want, m)
				}
			}
			if !slices.EqualFunc(b, want, func(a, b twopc.Message) bool { return a.Tx == b.Tx && a.To == b.To }) {
				t.Fatalf("batch for %s: %v, want %v", to, b, want)
			}
			total += len(b)
		}
		if total != n {
			t.Fatalf("%d messages in batches, want %d", total, n)
		}
		for i := 1; i < len(order); i++ { // destinations in order of first appearance
			if slices.IndexFunc(orig, func(m twopc.Message) bool { return m.To == order[i-1] }) >
				slices.IndexFunc(orig, func(m twopc.Message) bool { return m.To == order[i] }) {
				t.Fatalf("destinations out of order: %v", order)
			}
		}
		if n > 0 {
			got[order[0]][0].Tx = "changed" // batches are fresh slices
			if msgs[0].Tx == "changed" {
				t.Fatal("batch aliases the input")
			}
		}
	}
}
