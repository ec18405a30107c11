package deploy

import (
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/purchase"
)

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want uint64
	}{{0, 1}, {time.Millisecond, 1}, {1500 * time.Microsecond, 2}, {time.Second, 1000}} {
		if got := Ticks(tc.d, time.Millisecond); got != tc.want {
			t.Errorf("Ticks(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	p := DefaultProtocol()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if mc := p.CoordinatorMachine(); mc.PrepareTimeout != 1000 || mc.RetryBase != 50 || mc.RetryMax != 1000 {
		t.Errorf("coordinator machine %+v", mc)
	}
	if mc := p.ParticipantMachine("inventory"); mc.ID != "inventory" || mc.LockTimeout != 500 || mc.InquireAfter != 2000 {
		t.Errorf("participant machine %+v", mc)
	}
	p.LockTimeout = 0
	if p.Validate() == nil {
		t.Error("a lock timeout shorter than a tick is accepted")
	}
}

// TestDataDir: one process per data directory; the world is written once
// and a different one is refused.
func TestDataDir(t *testing.T) {
	dir := t.TempDir()
	lock, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second lock: %v", err)
	}
	lock.Close()
	w := purchase.ExampleWorld()
	if _, fresh, err := LoadWorld(dir, &w); err != nil || !fresh {
		t.Fatalf("first LoadWorld: fresh %v, %v", fresh, err)
	}
	got, fresh, err := LoadWorld(dir, nil)
	if err != nil || fresh || len(got.Items) != len(w.Items) {
		t.Fatalf("second LoadWorld: fresh %v, %d items, %v", fresh, len(got.Items), err)
	}
	other := purchase.ExampleWorld()
	for id, it := range other.Items {
		it.Stock++
		other.Items[id] = it
		break
	}
	if _, _, err := LoadWorld(dir, &other); err == nil {
		t.Fatal("a different world was accepted for an existing data directory")
	}
}
