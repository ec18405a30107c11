package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddrsDistinctBindableBelowEphemeral(t *testing.T) {
	addrs, err := Addrs(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	lo := ephemeralLow()
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s given twice", a)
		}
		seen[a] = true
		_, ps, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(ps)
		if lo > lowest+1000 && (p < lowest || p >= lo) {
			t.Fatalf("%s: port outside [%d, %d)", a, lowest, lo)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s not bindable: %v", a, err)
		}
		l.Close()
	}
}
