package failpoint

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

func TestParse(t *testing.T) {
	good := []string{"", "coordinator:after-commit-durable", "inventory:before-prepared-durable@3, *:after-committed-durable"}
	for _, s := range good {
		if _, err := Parse(s); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}
	bad := map[string]string{
		"coordinator":                        "COMPONENT:POINT",
		"coordinator:after-commit":           "before-X-durable",
		"coordinator:after-prepared-durable": "not written by coordinator",
		"payment:after-commit-durable":       "not written by payment",
		"order:after-bogus-durable":          "unknown record",
		"order:after-prepared-durable@0":     "positive integer",
	}
	for s, want := range bad {
		if _, err := Parse(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", s, err, want)
		}
	}
}

func TestHooksFireOnNthHit(t *testing.T) {
	s, err := Parse("payment:after-prepared-durable@2,coordinator:before-commit-durable")
	if err != nil {
		t.Fatal(err)
	}
	var killed []string
	s.Kill = func(p string) { killed = append(killed, p) }
	prep := &twopc.Ready{Records: []twopc.Record{{Type: twopc.RecPrepared}}}
	h := s.Hooks("payment")
	if h.CrashBeforeLog != nil {
		t.Fatal("payment has no before-log failpoint")
	}
	if h.CrashAfterLog(prep) || !h.CrashAfterLog(prep) || len(killed) != 1 {
		t.Fatalf("want a kill on the second PREPARED only, got %v", killed)
	}
	if h := s.Hooks("inventory"); h.CrashAfterLog != nil || h.CrashBeforeLog != nil {
		t.Fatal("inventory has no failpoint")
	}
	c := s.Hooks(twopc.CoordinatorID)
	if !c.CrashBeforeLog(&twopc.Ready{Records: []twopc.Record{{Type: twopc.RecBegin}, {Type: twopc.RecCommit}}}, true) {
		t.Fatal("coordinator before-commit-durable did not fire")
	}
}

// TestSnapshotPoints: the snapshot points fire at their step on the N-th
// hit, for the component named (* is any participant, not the
// coordinator), and compact-mid fires after a log segment is removed, not
// after any other file.
func TestSnapshotPoints(t *testing.T) {
	s, err := Parse("inventory:snapshot-synced@2,*:compact-before,payment:compact-mid,coordinator:snapshot-renamed")
	if err != nil {
		t.Fatal(err)
	}
	var killed []string
	s.Kill = func(p string) { killed = append(killed, p) }
	h := s.SnapshotHook("inventory")
	for _, st := range []wal.SnapshotStep{wal.SnapWrite, wal.SnapSynced, wal.SnapRenamed, wal.SnapWrite, wal.SnapSynced} {
		h(st)
	}
	if s.SnapshotHook("payment") != nil || s.CompactHook("coordinator") != nil {
		t.Fatal("hooks for components no point names")
	}
	s.SnapshotHook("coordinator")(wal.SnapSynced)
	s.SnapshotHook("coordinator")(wal.SnapRenamed)
	s.CompactHook("order")(10)
	fsys := s.FS("payment", wal.NewMemFS(1))
	fsys.MkdirAll("/d", 0o755)
	for _, n := range []string{"/d/a.tmp", "/d/1.wal"} {
		f, err := fsys.OpenFile(n, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := fsys.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	want := "[inventory:snapshot-synced@2 coordinator:snapshot-renamed@1 order:compact-before@1 payment:compact-mid@1]"
	if got := fmt.Sprint(killed); got != want {
		t.Fatalf("fired %s, want %s", got, want)
	}
}
