package failpoint

import (
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
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
