package idset

import (
	"unsafe"

	"github.com/dchest/siphash"
)

// sum64 is SipHash-2-4 (Aumasson and Bernstein) of s under the 128-bit
// key (k0, k1): a keyed pseudorandom function built for exactly this use,
// hashing strings an attacker chooses. Ids come from clients; with an
// unkeyed or merely seeded hash a client could craft ids that collide with
// ids already placed and so get new orders refused. Under a secret random
// key it cannot.
//
// The function is github.com/dchest/siphash's; s is handed to it without
// a copy (it neither keeps nor changes its argument).
func sum64(k0, k1 uint64, s string) uint64 {
	return siphash.Hash(k0, k1, unsafe.Slice(unsafe.StringData(s), len(s)))
}
