package engine

import (
	"os"
	"time"

	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/purchase"
)

// LoadWorld is deploy.LoadWorld.
func LoadWorld(dir string, w *purchase.World) (world purchase.World, fresh bool, err error) {
	return deploy.LoadWorld(dir, w)
}

// LockDir is deploy.LockDir.
func LockDir(dir string) (*os.File, error) { return deploy.LockDir(dir) }

// Ticks is deploy.Ticks.
func Ticks(d, tick time.Duration) uint64 { return deploy.Ticks(d, tick) }
