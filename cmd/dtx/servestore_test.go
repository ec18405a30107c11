package main

import (
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/deploy"
)

// dtx serve without --store refuses a data directory made with one, and
// serves a log-only one.
func TestServeWithoutStoreRefusesStoreDir(t *testing.T) {
	dir := t.TempDir()
	if err := deploy.MarkStore(dir); err != nil {
		t.Fatal(err)
	}
	open, closeStore, err := builtinService("inventory", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	if _, err := open(dir); err == nil || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("open of a store directory without --store: err %v", err)
	}
	if _, err := open(t.TempDir()); err != nil {
		t.Fatalf("open of a new directory: %v", err)
	}
}
