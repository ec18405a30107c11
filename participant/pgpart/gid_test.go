package pgpart

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGIDRoundTrip(t *testing.T) {
	owner := OwnerTag("dtx", "inventory", "db")
	if len(owner) != 8 || !safeGID(owner) {
		t.Fatalf("owner tag %q", owner)
	}
	cases := []string{"t1", "tx-0001", "a:b", "it's", "'; DROP TABLE x; --", "ünïcødé", "a.b", "a b", "\x00", strings.Repeat("é", 64), strings.Repeat("z", 128), strings.Repeat("'", 128)}
	for _, tx := range cases {
		for _, att := range []uint32{1, 2, 4294967295} {
			g, err := GID(owner, tx, att)
			if err != nil {
				t.Fatalf("GID(%q): %v", tx, err)
			}
			if len(g) > maxGIDLen || !safeGID(g) || !strings.HasPrefix(g, gidPrefix(owner)) {
				t.Fatalf("GID(%q) = %q (len %d)", tx, g, len(g))
			}
			o, tx2, a2, err := ParseGID(g)
			if err != nil || o != owner || tx2 != tx || a2 != att {
				t.Fatalf("ParseGID(%q) = %q %q %d %v", g, o, tx2, a2, err)
			}
		}
	}
	if g, _ := GID(owner, "plain-id_1:x", 1); !strings.HasSuffix(g, ".rplain-id_1:x") {
		t.Fatalf("a plain id is not readable in its gid: %s", g)
	}
}

func TestGIDRejects(t *testing.T) {
	owner := OwnerTag("dtx", "p", "db")
	for _, tx := range []string{"", strings.Repeat("x", 129), "\xff\xfe"} {
		if _, err := GID(owner, tx, 1); err == nil {
			t.Fatalf("GID accepted %q", tx)
		}
	}
	for _, g := range []string{"", "dtx1", "dtx2.abcdefgh.1.rx", "dtx1.abcdefgh.0.rx", "dtx1.abcdefgh.x.rx", "dtx1.abcdefgh.1.q", "dtx1.abcdefgh.1.b!!"} {
		if _, _, _, err := ParseGID(g); err == nil {
			t.Fatalf("ParseGID accepted %q", g)
		}
	}
	for _, g := range []string{"a'b", "a b", "", strings.Repeat("a", 200), "a\\b"} {
		if _, err := quoteGID(g); err == nil {
			t.Fatalf("quoteGID accepted %q", g)
		}
	}
	for _, n := range []string{"", "-x", "a b", strings.Repeat("a", 64), "é"} {
		if checkName("participant", n) == nil {
			t.Fatalf("checkName accepted %q", n)
		}
	}
}

// Random UTF-8 ids of up to 128 bytes always give a safe gid that parses
// back.
func TestGIDRandom(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	owner := OwnerTag("g", "p", "db")
	for i := 0; i < 5000; i++ {
		var b strings.Builder
		n := 1 + rng.IntN(128)
		for b.Len() < n {
			r := rune(rng.IntN(0x10ffff))
			if !utf8.ValidRune(r) || b.Len()+utf8.RuneLen(r) > n {
				r = rune('!' + rng.IntN(90))
			}
			b.WriteRune(r)
		}
		tx := b.String()
		g, err := GID(owner, tx, uint32(1+rng.IntN(1000)))
		if err != nil {
			t.Fatalf("seed %d: GID(%q): %v", seed, tx, err)
		}
		if _, tx2, _, err := ParseGID(g); err != nil || tx2 != tx || !safeGID(g) || len(g) > maxGIDLen {
			t.Fatalf("seed %d: %q -> %q -> %q %v", seed, tx, g, tx2, err)
		}
	}
}
