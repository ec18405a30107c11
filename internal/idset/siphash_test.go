package idset

import "testing"

// The reference vectors of the SipHash paper (key 00..0f, messages of
// bytes 00, 01, ... of length 0 and 15).
func TestSipHashVectors(t *testing.T) {
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	for _, c := range []struct {
		n    int
		want uint64
	}{{0, 0x726fdb47dd0e0e31}, {15, 0xa129ca6149be45e5}} {
		if got := sum64(k0, k1, string(msg[:c.n])); got != c.want {
			t.Errorf("length %d: %#x, want %#x", c.n, got, c.want)
		}
	}
}

func BenchmarkSipHash(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sum64(1, 2, "tx-0123456789abcdef-000042")
	}
}
