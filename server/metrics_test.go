package server

import "testing"

func TestReasonClass(t *testing.T) {
	nodes := []string{"inventory", "payment", "order"}
	for reason, want := range map[string]string{
		"prepare timeout: payment did not vote within 1000 ticks":               "prepare_timeout",
		"coordinator restarted before deciding":                                 "coordinator_restart",
		"deadlock: cycle t1->t2->t1; victim t2 (youngest)":                      "deadlock",
		"payment: insufficient funds for bob: balance 1.00, amount 9.00":        "payment_voted_no",
		"inventory: lock timeout after 500 ticks waiting for item:x held by t9": "inventory_lock_timeout",
		"somebody: anything":             "other",
		"presumed abort":                 "other",
		"order: order t1 already exists": "order_voted_no",
		"inventory: deadlock: waits for t3 which waits for it here (youngest branch votes NO)": "inventory_deadlock",
	} {
		if got := reasonClass(reason, nodes); got != want {
			t.Errorf("%q: got %s, want %s", reason, got, want)
		}
	}
}
