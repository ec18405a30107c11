package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dtx-dev/dtx/purchase"
)

// LockDir takes the exclusive lock of a data directory (DIR/LOCK): one
// process per directory. Closing the file releases it.
func LockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("deploy: lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("deploy: data directory %s is in use by another dtx process", dir)
	}
	return f, nil
}

// LoadWorld reads DIR/world.json, or writes w there (the built-in example
// world if w is nil) when DIR has none; fresh reports the latter. A given w
// must equal a stored one.
func LoadWorld(dir string, w *purchase.World) (world purchase.World, fresh bool, err error) {
	return loadWorld(dir, w)
}

// loadWorld reads DIR/world.json, or writes w there if DIR is new.
func loadWorld(dir string, w *purchase.World) (purchase.World, bool, error) {
	path := filepath.Join(dir, "world.json")
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored, err := purchase.ParseWorld(data)
		if err != nil {
			return purchase.World{}, false, fmt.Errorf("deploy: %s: %w", path, err)
		}
		if w != nil {
			given, _ := json.Marshal(w)
			have, _ := json.Marshal(stored)
			if !bytes.Equal(given, have) {
				return purchase.World{}, false, fmt.Errorf("deploy: %s already holds a different world; use a new data directory for a new world", dir)
			}
		}
		return stored, false, nil
	case errors.Is(err, os.ErrNotExist):
		if w == nil {
			ex := purchase.ExampleWorld()
			w = &ex
		}
		data, err := json.MarshalIndent(w, "", "  ")
		if err != nil {
			return purchase.World{}, false, err
		}
		if err := writeFileSync(path, data); err != nil {
			return purchase.World{}, false, fmt.Errorf("deploy: write %s: %w", path, err)
		}
		return *w, true, nil
	default:
		return purchase.World{}, false, fmt.Errorf("deploy: %w", err)
	}
}

// writeFileSync writes a file atomically and durably: temp file, fsync,
// rename, fsync the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
