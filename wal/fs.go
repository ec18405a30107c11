package wal

import (
	"io"
	"io/fs"
	"os"
	"sort"
)

// FS is the file system under a Log: the few calls it makes, so that tests
// can fail or crash any of them (see MemFS). Paths are joined with
// path/filepath.
type FS interface {
	// OpenFile opens a file like os.OpenFile. The Log uses os.O_RDONLY,
	// os.O_RDWR, os.O_CREATE and os.O_TRUNC (never os.O_APPEND: it writes
	// with WriteAt at the logical end of the active segment).
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Rename renames a file, replacing newpath; durable after SyncDir.
	Rename(oldpath, newpath string) error
	// Remove removes a file; durable after SyncDir.
	Remove(name string) error
	// ReadDir returns the names of the entries of dir, sorted.
	ReadDir(dir string) ([]string, error)
	// MkdirAll creates dir and any missing parents.
	MkdirAll(dir string, perm fs.FileMode) error
	// SyncDir makes the entries of dir (creations, renames, removals)
	// durable: fsync of the directory.
	SyncDir(dir string) error
}

// File is an open file of an FS.
type File interface {
	io.Writer
	io.ReaderAt
	// WriteAt writes at an offset like os.File.WriteAt (which refuses a
	// file opened with os.O_APPEND), extending the file if needed.
	io.WriterAt
	// Sync makes the file's data durable, with the metadata needed to read
	// it back (its size): fdatasync on Linux.
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// OSFS returns the FS of the operating system. Its File.Sync is fdatasync
// on Linux and fsync elsewhere.
func OSFS() FS { return osFS{} }

type osFS struct{}

var _ FS = osFS{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(oldpath, newpath string) error        { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }

func (osFS) ReadDir(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// osFile is an *os.File whose Sync is fdatasync.
type osFile struct{ *os.File }

var _ File = osFile{}

func (f osFile) Sync() error { return fdatasync(f.File) }
