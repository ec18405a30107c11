package wal

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

func memWrite(t *testing.T, f File, s string) {
	t.Helper()
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestMemFSCrashKeepsSynced(t *testing.T) {
	m := NewMemFS(1)
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	memWrite(t, f, "hello ")
	// The file's entry is not durable before SyncDir: a crash loses it.
	c := m.Clone()
	c.Crash(CrashSyncedOnly)
	if names := c.List("/d"); len(names) != 0 {
		t.Fatalf("unsynced create survived: %v", names)
	}
	if err := m.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	memWrite(t, f, "world")
	c = m.Clone()
	c.Crash(CrashSyncedOnly)
	if got, _ := c.ReadFile("/d/a"); string(got) != "hello " {
		t.Fatalf("after crash: %q", got)
	}
	// Torn modes keep the synced part and a prefix of the rest, then maybe
	// zeros or garbage.
	for seed := range uint64(50) {
		for _, mode := range []CrashMode{CrashTornPrefix, CrashTornZeros, CrashTornGarbage} {
			c := m.Clone()
			c.pcg.Seed(seed, seed)
			c.Crash(mode)
			got, _ := c.ReadFile("/d/a")
			if !bytes.HasPrefix(got, []byte("hello ")) || len(got) > len("hello world") {
				t.Fatalf("mode %d: %q", mode, got)
			}
			if mode == CrashTornPrefix && !bytes.HasPrefix([]byte("hello world"), got) {
				t.Fatalf("torn prefix: %q", got)
			}
		}
	}
	// Old handles are dead after a crash.
	m.Crash(CrashSyncedOnly)
	if _, err := f.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write on a pre-crash handle = %v", err)
	}
}

func TestMemFSTruncateAndOverwrite(t *testing.T) {
	m := NewMemFS(2)
	m.MkdirAll("/d", 0o755)
	f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	m.SyncDir("/d")
	memWrite(t, f, "0123456789")
	f.Sync()
	if err := f.Truncate(4); err != nil {
		t.Fatal(err)
	}
	memWrite(t, f, "abc")
	if got, _ := m.ReadFile("/d/a"); string(got) != "0123abc" {
		t.Fatalf("content %q", got)
	}
	c := m.Clone()
	c.Crash(CrashSyncedOnly)
	if got, _ := c.ReadFile("/d/a"); string(got) != "0123456789" {
		t.Fatalf("synced content after an unsynced truncate: %q", got)
	}
	f.Sync()
	c = m.Clone()
	c.Crash(CrashSyncedOnly)
	if got, _ := c.ReadFile("/d/a"); string(got) != "0123abc" {
		t.Fatalf("after sync: %q", got)
	}
	buf := make([]byte, 4)
	if n, err := f.ReadAt(buf, 5); n != 2 || err != io.EOF || string(buf[:2]) != "bc" {
		t.Fatalf("ReadAt = %d %v %q", n, err, buf[:n])
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 7 {
		t.Fatalf("Stat = %v %v", fi, err)
	}
}

func TestMemFSRenameRemoveDurability(t *testing.T) {
	m := NewMemFS(3)
	m.MkdirAll("/d", 0o755)
	m.WriteFile("/d/old", []byte("x"))
	if err := m.Rename("/d/old", "/d/new"); err != nil {
		t.Fatal(err)
	}
	c := m.Clone()
	c.Crash(CrashSyncedOnly)
	if names := c.List("/d"); len(names) != 1 || names[0] != "old" {
		t.Fatalf("unsynced rename: %v", names)
	}
	m.SyncDir("/d")
	if err := m.Remove("/d/new"); err != nil {
		t.Fatal(err)
	}
	c = m.Clone()
	c.Crash(CrashSyncedOnly)
	if names := c.List("/d"); len(names) != 1 || names[0] != "new" {
		t.Fatalf("unsynced remove: %v", names)
	}
	m.SyncDir("/d")
	m.Crash(CrashSyncedOnly)
	if names := m.List("/d"); len(names) != 0 {
		t.Fatalf("after synced remove: %v", names)
	}
	if _, err := m.OpenFile("/d/new", os.O_RDONLY, 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open removed = %v", err)
	}
	if _, err := m.ReadDir("/nope"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadDir missing = %v", err)
	}
}

func TestMemFSFaultsAndHalt(t *testing.T) {
	m := NewMemFS(4)
	m.MkdirAll("/d", 0o755)
	f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
	boom := errors.New("boom")
	m.FailNth(OpSync, 2, boom)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, boom) {
		t.Fatalf("second sync = %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("third sync = %v", err)
	}
	calls := m.Calls()
	m.HaltAfter(1)
	memWrite(t, f, "a")
	if _, err := f.Write([]byte("b")); !errors.Is(err, ErrCrashed) || !m.Halted() {
		t.Fatalf("write after the halt point = %v", err)
	}
	if err := m.SyncDir("/d"); !errors.Is(err, ErrCrashed) {
		t.Fatalf("SyncDir while halted = %v", err)
	}
	if m.Calls() != calls+2 {
		t.Fatalf("calls %d, want %d", m.Calls(), calls+2)
	}
	if m.OpCalls(OpWrite) != 2 {
		t.Fatalf("write calls %d", m.OpCalls(OpWrite))
	}
	m.Restart()
	if _, err := f.Write([]byte("c")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("old handle after Restart = %v", err)
	}
	if got, _ := m.ReadFile("/d/a"); string(got) != "a" {
		t.Fatalf("Restart lost data: %q", got)
	}
	g, err := m.OpenFile("/d/a", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte("x")); err == nil {
		t.Fatal("write on a read-only handle")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close = %v", err)
	}
	if _, err := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0); !errors.Is(err, os.ErrExist) {
		t.Fatalf("O_EXCL = %v", err)
	}
}

// TestMemFSDeterministic: the same seed and calls give the same crash.
func TestMemFSDeterministic(t *testing.T) {
	run := func() []byte {
		m := NewMemFS(99)
		m.MkdirAll("/d", 0o755)
		f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
		m.SyncDir("/d")
		for i := range 100 {
			f.Write(bytes.Repeat([]byte{byte(i)}, 10))
			if i%10 == 0 {
				f.Sync()
			}
		}
		m.Crash(CrashTornGarbage)
		b, _ := m.ReadFile("/d/a")
		return b
	}
	if a, b := run(), run(); !bytes.Equal(a, b) {
		t.Fatal("same seed, different crash")
	}
}
