package wal

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// diskFullConfig is a log with the default 4 MiB preallocation (inline) on
// a 2 MB file system.
func diskFullConfig(fsys *MemFS, dir string) Config {
	cfg := Config{Dir: dir, FS: fsys, SegmentSize: DefaultSegmentSize, PreallocSize: DefaultPreallocSize, inlinePrealloc: true}
	return cfg
}

// TestDiskFullFirstStart: on a 2 MB file system a log with 4 MiB of
// preallocation still starts (without preallocating), takes appends, and
// leaves no temporary segment; a start whose header cannot even be written
// fails and leaves nothing behind either.
func TestDiskFullFirstStart(t *testing.T) {
	fsys := NewMemFS(1)
	fsys.SetCapacity(2 << 20)
	l, err := Open(diskFullConfig(fsys, "/a"))
	if err != nil {
		t.Fatalf("first start on a full disk: %v", err)
	}
	appendN(t, l, 1, 10)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range fsys.List("/a") {
		if strings.HasSuffix(name, tmpSuffix) {
			t.Fatalf("leftover %s", name)
		}
	}
	// Nothing left at all: the header does not fit.
	full := NewMemFS(2)
	full.SetCapacity(10)
	if _, err := Open(diskFullConfig(full, "/b")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("start with no room for a header: %v, want ENOSPC", err)
	}
	if names := full.List("/b"); len(names) != 0 {
		t.Fatalf("a failed first start left %v", names)
	}
}

// TestDiskFullRestart: a log that preallocated while there was room, was
// stopped cleanly (its zeros given back) and whose room was then taken by
// another file restarts without preallocation instead of failing, and its
// records are all there.
func TestDiskFullRestart(t *testing.T) {
	fsys := NewMemFS(3)
	cfg := diskFullConfig(fsys, "/a")
	cfg.PreallocSize = 1 << 20
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := appendN(t, l, 1, 20)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Another log takes the room back: 2 MB in all, about 1.5 MB used.
	fsys.SetCapacity(2 << 20)
	f, err := fsys.OpenFile("/other", 0x42, 0o644) // O_RDWR|O_CREATE
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1500<<10), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err = Open(cfg)
	if err != nil {
		t.Fatalf("restart on a full disk: %v", err)
	}
	want = append(want, appendN(t, l, 21, 5)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := 0
	if err := l.Replay(func(r Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("replayed %d records, want %d", n, len(want))
	}
}
