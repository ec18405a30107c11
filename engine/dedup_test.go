package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// TestEngineDedupWindow: through the whole deployment, a resubmission gets
// the first outcome until the window has passed, then "outcome expired"
// (nothing runs), across a restart too.
func TestEngineDedupWindow(t *testing.T) {
	dir := t.TempDir()
	w := hotWorld(4, 4)
	cfg := DefaultConfig(dir)
	cfg.World = &w
	cfg.PrepareTimeout = 50 * time.Millisecond
	cfg.DedupWindow = 100 * time.Millisecond
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r purchase.Request
	for _, q := range genRequests(rand.New(rand.NewPCG(1, 1)), 50, 4, 4) {
		if q.ItemID != "nosuchitem" {
			r = q
			break
		}
	}
	first, err := e.Submit(ctx, &r)
	if err != nil || !first.Committed {
		t.Fatalf("first run: %+v %v", first, err)
	}
	expired := false
	for !expired && ctx.Err() == nil {
		o, err := e.Submit(ctx, &r)
		switch {
		case errors.Is(err, twopc.ErrOutcomeExpired):
			expired = true
		case err != nil:
			t.Fatal(err)
		case !o.Duplicate || !o.Committed:
			t.Fatalf("inside the window: %+v, want the first outcome as a duplicate", o)
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !expired {
		t.Fatal("never expired")
	}
	st, err := e.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Order.Orders) != 1 {
		t.Fatalf("%d orders, want 1", len(st.Order.Orders))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(ctx, &r); !errors.Is(err, twopc.ErrOutcomeExpired) {
		// The restart replays the checkpoints: still expired (unless the
		// third window passed meanwhile, which a 100 ms window allows on
		// a slow machine: then it is new).
		if err != nil {
			t.Fatalf("after a restart: %v", err)
		}
		t.Log("the id was forgotten across the restart (a third window passed)")
	}
}
