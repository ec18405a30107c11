package engine

import (
	"os"
	"time"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// The pieces of an Engine that a networked deployment (package server)
// shares with it, so that a process per component behaves as the embedded
// deployment does.

// LoadWorld reads DIR/world.json, or writes w there (the built-in example
// world if w is nil) when DIR has none; fresh reports the latter. A given w
// must equal a stored one.
func LoadWorld(dir string, w *purchase.World) (world purchase.World, fresh bool, err error) {
	return loadWorld(dir, w)
}

// LockDir takes the exclusive lock of a data directory (DIR/LOCK): one
// process per directory. Closing the file releases it.
func LockDir(dir string) (*os.File, error) { return lockDir(dir) }

// Ticks converts a duration to protocol ticks, rounding up, at least 1.
func Ticks(d, tick time.Duration) uint64 { return ticks(d, tick) }

// ParticipantMachine returns the protocol configuration of service id
// under c, as Open builds it.
func (c Config) ParticipantMachine(id string) twopc.ParticipantConfig {
	mc := twopc.DefaultParticipantConfig(id)
	mc.LockTimeout = ticks(c.LockTimeout, c.Tick)
	mc.InquireAfter = ticks(2*c.PrepareTimeout, c.Tick)
	mc.InquireMax = 5 * mc.InquireAfter
	mc.Deadlock = c.Deadlock
	if c.DetectEvery > 0 {
		mc.DetectEvery = ticks(c.DetectEvery, c.Tick)
		mc.DetectAfter = mc.DetectEvery
	}
	return mc
}

// CoordinatorMachine returns the coordinator's protocol configuration under
// c, as Open builds it (without the jitter source).
func (c Config) CoordinatorMachine() twopc.CoordinatorConfig {
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = ticks(c.PrepareTimeout, c.Tick)
	mc.RetryBase = ticks(c.CommitRetry, c.Tick)
	mc.RetryMax = 20 * mc.RetryBase
	mc.MaxInflight = c.MaxInflight
	mc.MaxAttempts = c.MaxAttempts
	if c.DetectEvery > 0 {
		mc.WaitsTTL = 4 * ticks(c.DetectEvery, c.Tick)
	}
	return mc
}
