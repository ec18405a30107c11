package bench

import (
	"io"
	"net"
	"os"
	"slices"
	"time"
)

// Floor is what the machine itself can do, measured in the same run.
type Floor struct {
	// FsyncPerSec is the rate of one 64-byte write + fdatasync at a time.
	FsyncPerSec float64 `json:"fsync_per_sec"`
	// LoopbackRTT is the median round trip of 64 bytes over loopback TCP.
	LoopbackRTT time.Duration `json:"loopback_rtt_ns"`
}

// MeasureFloor measures the machine's floor in dir (on the disk under test).
func MeasureFloor(dir string) (Floor, error) {
	var fl Floor
	f, err := os.CreateTemp(dir, "floor-")
	if err != nil {
		return fl, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	const n = 300
	start := time.Now()
	for range n {
		if _, err := f.Write(buf); err != nil {
			return fl, err
		}
		if err := fdatasync(f); err != nil {
			return fl, err
		}
	}
	fl.FsyncPerSec = n / time.Since(start).Seconds()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fl, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return fl, err
	}
	defer c.Close()
	rtts := make([]time.Duration, 0, 2000)
	for range 2000 {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return fl, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return fl, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	fl.LoopbackRTT = rtts[len(rtts)/2]
	return fl, nil
}
