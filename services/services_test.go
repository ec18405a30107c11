package services

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/purchase"
)

// TestRegistry: the built-in services in PREPARE order, each built from
// the world, checked, and its view carried through State and its JSON (as
// the cluster tooling reads it back) unchanged.
func TestRegistry(t *testing.T) {
	if got, want := IDs(), []string{"inventory", "payment", "order"}; !slices.Equal(got, want) {
		t.Fatalf("IDs() = %v, want %v", got, want)
	}
	if _, ok := Lookup("shipping"); ok {
		t.Fatal("shipping is a user's own service, not a built-in one")
	}
	var st State
	if err := st.Set("shipping", nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Set of an unknown service: %v", err)
	}
	w := purchase.ExampleWorld()
	today := time.Date(2026, time.March, 15, 0, 0, 0, 0, time.UTC)
	var fromJSON State
	for _, svc := range Builtin() {
		r := svc.New(w, today)
		if err := svc.Check(r); err != nil {
			t.Errorf("%s: a fresh store fails its check: %v", svc.ID, err)
		}
		if err := st.Set(svc.ID, r); err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(svc.View(r))
		if err != nil {
			t.Fatal(err)
		}
		if err := fromJSON.SetJSON(svc.ID, data); err != nil {
			t.Fatalf("%s: %v", svc.ID, err)
		}
	}
	if len(st.Inventory.Items) != len(w.Items) || len(st.Payment.Accounts) != len(w.Accounts) {
		t.Fatalf("the views do not hold the world: %d items, %d accounts", len(st.Inventory.Items), len(st.Payment.Accounts))
	}
	a, _ := json.Marshal(st)
	b, _ := json.Marshal(fromJSON)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("a state read back from JSON differs:\n%s\n%s", a, b)
	}
	if errs := CheckAtomic(&st); len(errs) > 0 {
		t.Fatalf("a fresh deployment is not atomic: %v", errs)
	}
}
