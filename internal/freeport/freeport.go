// Package freeport picks loopback ports for servers that must be told
// their address before they start (tests, the benchmark's processes).
//
// A port found by listening on port 0 comes from the kernel's ephemeral
// range, the same range the kernel draws the local ports of outgoing
// connections from: between the moment the port is picked and the moment
// the server binds it, any connection made by a concurrent test (several
// test binaries run at once) can take it, and the server fails with
// "address already in use". Ports here are drawn at random below the
// ephemeral range, which outgoing connections and port-0 listeners never
// use, checked by binding them, and never handed out twice by one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const lowest = 10000 // below this, ports of well-known services are common

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// ephemeralLow returns the first port of the kernel's ephemeral range
// (Linux), or 0 if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}

// Addr returns "127.0.0.1:PORT" for a port that was free a moment ago.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if hi := ephemeralLow(); hi > lowest+1000 {
		for range 200 {
			p := lowest + rand.IntN(hi-lowest)
			if given[p] {
				continue
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			l.Close()
			given[p] = true
			return addr, nil
		}
	}
	// No usable range below the ephemeral one: let the kernel pick.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("freeport: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Addrs returns n distinct addresses (Addr n times).
func Addrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	for range n {
		a, err := Addr()
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
