package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"
)

// ErrCrashed is returned by every call of a MemFS that was halted (see
// MemFS.HaltAfter) and by every call on a File opened before MemFS.Crash.
var ErrCrashed = errors.New("wal: memfs: crashed")

// Op names one kind of FS or File call, for fault injection and counting.
type Op uint8

const (
	OpOpen Op = 1 + iota
	OpWrite
	OpReadAt
	OpSync
	OpTruncate
	OpStat
	OpClose
	OpRename
	OpRemove
	OpReadDir
	OpMkdirAll
	OpSyncDir
	numOps
)

var opNames = [numOps]string{"", "open", "write", "readat", "sync", "truncate", "stat", "close",
	"rename", "remove", "readdir", "mkdirall", "syncdir"}

func (o Op) String() string {
	if o == 0 || o >= numOps {
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
	return opNames[o]
}

// CrashMode says what survives MemFS.Crash besides what was made durable.
type CrashMode uint8

const (
	// CrashSyncedOnly keeps exactly what was durable: each file as of its
	// last Sync, each directory's entries as of its last SyncDir.
	CrashSyncedOnly CrashMode = 1 + iota
	// CrashTornPrefix also keeps a random prefix of each file's unsynced
	// writes (a torn write) and a random prefix of the unsynced directory
	// operations, in order.
	CrashTornPrefix
	// CrashTornZeros is CrashTornPrefix where the lost rest of a file's
	// unsynced tail may read back as zeros, up to a random length (the file
	// size reached the disk, the data did not).
	CrashTornZeros
	// CrashTornGarbage is CrashTornZeros with random bytes instead of zeros.
	CrashTornGarbage
)

// MemFS is an in-memory FS that knows what was made durable. Crash throws
// away everything that was not synced (optionally keeping a random torn
// prefix of it), HaltAfter stops it at any call, and FailNth makes one call
// of a kind fail: together they let a test crash a Log at every I/O call
// and check what it recovers. It is safe for concurrent use. All randomness
// comes from the seed given to NewMemFS.
//
// Directories are durable as soon as MkdirAll returns; file creations,
// renames and removals are durable after SyncDir of their directory; file
// contents after File.Sync.
type MemFS struct {
	mu      sync.Mutex
	pcg     rand.PCG
	rng     *rand.Rand
	gen     uint64 // bumped by Crash; Files of older generations fail
	dirs    map[string]bool
	files   map[string]*memNode // the namespace as the program sees it
	durable map[string]*memNode // the namespace as of the last SyncDir calls
	pending []nsOp              // namespace changes not yet made durable
	calls   int
	opCalls [numOps]int
	haltAt  int // halt when calls reaches haltAt (0: never)
	halted  bool
	faults  []memFault
	// capacity bounds the bytes of every file's content together (0: no
	// bound); a write that would pass it writes what fits and fails with
	// ENOSPC, as a full disk does.
	capacity int64
}

// SetCapacity bounds the bytes all files may hold together (0: no bound):
// a write past it writes what fits and fails with syscall.ENOSPC.
func (m *MemFS) SetCapacity(bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capacity = bytes
}

// usedLocked returns the bytes held by the files of the namespace.
func (m *MemFS) usedLocked() int64 {
	var n int64
	for _, f := range m.files {
		n += int64(len(f.data))
	}
	return n
}

// roomLocked returns how many bytes of p, written at off into n, fit.
func (m *MemFS) roomLocked(n *memNode, p []byte, off int64) int {
	if m.capacity <= 0 {
		return len(p)
	}
	grow := off + int64(len(p)) - int64(len(n.data))
	if grow <= 0 {
		return len(p)
	}
	free := m.capacity - m.usedLocked()
	if grow <= free {
		return len(p)
	}
	return max(0, len(p)-int(grow-max(free, 0)))
}

var _ FS = (*MemFS)(nil)

type nsKind uint8

const (
	nsCreate nsKind = 1 + iota
	nsRename
	nsRemove
)

type nsOp struct {
	kind     nsKind
	name, to string
	node     *memNode
}

type memFault struct {
	op  Op
	at  int // fail when opCalls[op] reaches at
	err error
}

// memNode is a file's content. synced is the durable content; while shared
// is set it aliases a prefix of data's array (data only grew since the last
// Sync), and it is detached before data changes below len(synced).
type memNode struct {
	data     []byte
	synced   []byte
	shared   bool
	diverged bool // data differs from synced below len(synced)
	shrunk   bool // truncated below len(synced) since the last Sync
}

// NewMemFS returns an empty in-memory file system whose random choices
// (torn writes on Crash) derive from seed.
func NewMemFS(seed uint64) *MemFS {
	m := &MemFS{
		dirs:    map[string]bool{".": true, string(filepath.Separator): true},
		files:   map[string]*memNode{},
		durable: map[string]*memNode{},
	}
	m.pcg = *rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)
	m.rng = rand.New(&m.pcg)
	return m
}

// Clone returns a deep copy of m: files, what is durable, pending directory
// operations, counters and random state. Files open on m are not carried
// over.
func (m *MemFS) Clone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &MemFS{
		pcg:     m.pcg,
		dirs:    maps.Clone(m.dirs),
		files:   map[string]*memNode{},
		durable: map[string]*memNode{},
		calls:   m.calls,
		opCalls: m.opCalls,
		haltAt:  m.haltAt,
		halted:  m.halted,
		faults:  slices.Clone(m.faults),
	}
	c.rng = rand.New(&c.pcg)
	copies := map[*memNode]*memNode{}
	cp := func(n *memNode) *memNode {
		if n == nil {
			return nil
		}
		if c, ok := copies[n]; ok {
			return c
		}
		nn := &memNode{data: bytes.Clone(n.data), synced: bytes.Clone(n.synced), diverged: n.diverged, shrunk: n.shrunk}
		copies[n] = nn
		return nn
	}
	for k, n := range m.files {
		c.files[k] = cp(n)
	}
	for k, n := range m.durable {
		c.durable[k] = cp(n)
	}
	for _, op := range m.pending {
		op.node = cp(op.node)
		c.pending = append(c.pending, op)
	}
	return c
}

// Calls returns the number of FS and File calls made so far (calls refused
// because the FS is halted are not counted).
func (m *MemFS) Calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// OpCalls returns the number of calls of kind op made so far.
func (m *MemFS) OpCalls(op Op) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.opCalls[op]
}

// HaltAfter lets the next n calls run and halts the FS at the one after:
// that call and every later one fail with ErrCrashed, without effect, until
// Crash. HaltAfter(0) halts at the next call.
func (m *MemFS) HaltAfter(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.haltAt = m.calls + n + 1
}

// Halted reports whether the FS is halted.
func (m *MemFS) Halted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.halted
}

// FailNth makes the nth call of kind op from now on (n ≥ 1) fail with err,
// without effect.
func (m *MemFS) FailNth(op Op, n int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = append(m.faults, memFault{op: op, at: m.opCalls[op] + n, err: err})
}

// Crash simulates a power loss and reboot: the files and directory entries
// become what was durable (plus, in the torn modes, a random part of what
// was not), every File opened before fails with ErrCrashed, a halt ends and
// pending faults are dropped.
func (m *MemFS) Crash(mode CrashMode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.halted = false
	m.haltAt = 0
	m.faults = nil
	ns := make(map[string]*memNode, len(m.durable))
	for k, n := range m.durable {
		ns[k] = n
	}
	if mode != CrashSyncedOnly && len(m.pending) > 0 {
		applyNSOps(ns, m.pending[:m.rng.IntN(len(m.pending)+1)])
	}
	m.pending = nil
	names := make([]string, 0, len(ns))
	for k := range ns {
		names = append(names, k)
	}
	sort.Strings(names) // random draws in a fixed order: deterministic
	after := map[*memNode]*memNode{}
	files := make(map[string]*memNode, len(ns))
	for _, k := range names {
		n := ns[k]
		nn, ok := after[n]
		if !ok {
			content := m.crashContentLocked(n, mode)
			nn = &memNode{data: content, synced: content[:len(content):len(content)], shared: true}
			after[n] = nn
		}
		files[k] = nn
	}
	m.files = files
	m.durable = make(map[string]*memNode, len(files))
	for k, n := range files {
		m.durable[k] = n
	}
}

// Disarm drops the faults armed and not met yet: FailNth's, and a
// HaltAfter not reached (a halt already reached stays until Crash or
// Restart).
func (m *MemFS) Disarm() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.halted {
		m.haltAt = 0
	}
	m.faults = nil
}

// Restart simulates a crash of the process alone (the machine stays up):
// every File opened before fails with ErrCrashed, a halt ends and pending
// faults are dropped, but nothing written is lost — unsynced data stays as
// it would in the page cache.
func (m *MemFS) Restart() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.halted = false
	m.haltAt = 0
	m.faults = nil
}

func applyNSOps(ns map[string]*memNode, ops []nsOp) {
	for _, op := range ops {
		switch op.kind {
		case nsCreate:
			ns[op.name] = op.node
		case nsRename:
			delete(ns, op.name)
			ns[op.to] = op.node
		case nsRemove:
			delete(ns, op.name)
		}
	}
}

// crashContentLocked returns what of n's content survives a crash in mode.
//
// A file that was only written since its last Sync (appended to, or
// overwritten in place, as in a preallocated region) keeps its durable size
// and content except for a torn prefix of the unsynced bytes, in file
// order: bytes [lcp, keep) are new, then (in the zeros and garbage modes)
// up to the end of the unsynced region may read as zeros or garbage, and
// the rest is the durable content as it was. A file truncated below its
// durable size since its last Sync either is as of that Sync or has the
// truncation and a torn prefix of what followed.
func (m *MemFS) crashContentLocked(n *memNode, mode CrashMode) []byte {
	overwrite := n.diverged && !n.shrunk
	if mode == CrashSyncedOnly || n.diverged && !overwrite && m.rng.IntN(2) == 0 {
		return bytes.Clone(n.synced)
	}
	lcp := len(n.synced)
	if n.diverged {
		lcp = 0
		for lcp < len(n.synced) && lcp < len(n.data) && n.synced[lcp] == n.data[lcp] {
			lcp++
		}
	}
	if lcp > len(n.data) {
		lcp = len(n.data)
	}
	hi := len(n.data) // end of the unsynced region
	if overwrite && len(n.data) <= len(n.synced) {
		for hi > lcp && n.data[hi-1] == n.synced[hi-1] {
			hi--
		}
	}
	keep := lcp + m.rng.IntN(hi-lcp+1)
	out := bytes.Clone(n.data[:keep])
	if out == nil {
		out = []byte{}
	}
	if mode == CrashTornZeros || mode == CrashTornGarbage {
		extra := make([]byte, m.rng.IntN(hi-keep+1))
		if mode == CrashTornGarbage {
			for i := range extra {
				extra[i] = byte(m.rng.Uint32())
			}
		}
		out = append(out, extra...)
	}
	if overwrite && len(out) < len(n.synced) {
		// The size was durable; what the torn write did not reach is as
		// it was synced.
		out = append(out, n.synced[len(out):]...)
	}
	return out
}

// ReadFile returns a copy of the current content of a file. It is not an FS
// call: it is never counted, faulted or halted.
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[filepath.Clean(name)]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	return bytes.Clone(n.data), nil
}

// WriteFile sets the content of a file, creating it (its directory must
// exist), and makes the content and the entry durable at once: a test's way
// to plant a damaged file. It is not an FS call.
func (m *MemFS) WriteFile(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if !m.dirs[filepath.Dir(name)] {
		return &fs.PathError{Op: "write", Path: name, Err: fs.ErrNotExist}
	}
	content := bytes.Clone(data)
	if content == nil {
		content = []byte{}
	}
	n := &memNode{data: content, synced: content[:len(content):len(content)], shared: true}
	if old, ok := m.files[name]; ok {
		// Keep the node (open Files see the new content).
		*old = *n
		n = old
	}
	m.files[name] = n
	m.durable[name] = n
	return nil
}

// List returns the names of the files in dir, sorted. It is not an FS call.
func (m *MemFS) List(dir string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listLocked(filepath.Clean(dir))
}

func (m *MemFS) listLocked(dir string) []string {
	var names []string
	for k := range m.files {
		if filepath.Dir(k) == dir {
			names = append(names, filepath.Base(k))
		}
	}
	for k := range m.dirs {
		if k != dir && filepath.Dir(k) == dir {
			names = append(names, filepath.Base(k))
		}
	}
	sort.Strings(names)
	return names
}

// callLocked accounts for one call of kind op and returns the error it must
// fail with, if any.
func (m *MemFS) callLocked(op Op) error {
	if m.halted {
		return ErrCrashed
	}
	m.calls++
	m.opCalls[op]++
	if m.haltAt > 0 && m.calls >= m.haltAt {
		m.halted = true
		return ErrCrashed
	}
	for i, f := range m.faults {
		if f.op == op && f.at == m.opCalls[op] {
			m.faults = slices.Delete(m.faults, i, i+1)
			return f.err
		}
	}
	return nil
}

func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpOpen); err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	name = filepath.Clean(name)
	if !m.dirs[filepath.Dir(name)] {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if m.dirs[name] {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	}
	n, ok := m.files[name]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !ok:
		n = &memNode{}
		m.files[name] = n
		m.pending = append(m.pending, nsOp{kind: nsCreate, name: name, node: n})
	}
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if flag&os.O_TRUNC != 0 && writable {
		n.truncate(0)
	}
	return &memFile{fs: m, node: n, name: name, gen: m.gen, flag: flag, writable: writable,
		readable: flag&os.O_WRONLY == 0}, nil
}

func (m *MemFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpRename); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	oldpath, newpath = filepath.Clean(oldpath), filepath.Clean(newpath)
	n, ok := m.files[oldpath]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	if !m.dirs[filepath.Dir(newpath)] {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	delete(m.files, oldpath)
	m.files[newpath] = n
	m.pending = append(m.pending, nsOp{kind: nsRename, name: oldpath, to: newpath, node: n})
	return nil
}

func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpRemove); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	name = filepath.Clean(name)
	if _, ok := m.files[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	delete(m.files, name)
	m.pending = append(m.pending, nsOp{kind: nsRemove, name: name})
	return nil
}

func (m *MemFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpReadDir); err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: err}
	}
	dir = filepath.Clean(dir)
	if !m.dirs[dir] {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	return m.listLocked(dir), nil
}

func (m *MemFS) MkdirAll(dir string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpMkdirAll); err != nil {
		return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	for d := filepath.Clean(dir); !m.dirs[d]; d = filepath.Dir(d) {
		if _, ok := m.files[d]; ok {
			return &fs.PathError{Op: "mkdir", Path: d, Err: errors.New("not a directory")}
		}
		m.dirs[d] = true
	}
	return nil
}

func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.callLocked(OpSyncDir); err != nil {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: err}
	}
	dir = filepath.Clean(dir)
	if !m.dirs[dir] {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: fs.ErrNotExist}
	}
	kept := m.pending[:0]
	for _, op := range m.pending {
		if filepath.Dir(op.name) == dir || op.kind == nsRename && filepath.Dir(op.to) == dir {
			applyNSOps(m.durable, []nsOp{op})
		} else {
			kept = append(kept, op)
		}
	}
	clear(m.pending[len(kept):])
	m.pending = kept
	return nil
}

// detach gives n.synced its own array before data changes below it.
func (n *memNode) detach() {
	if n.shared {
		n.synced = bytes.Clone(n.synced)
		n.shared = false
	}
	n.diverged = true
}

func (n *memNode) writeAt(p []byte, off int64) {
	if off < int64(len(n.synced)) {
		n.detach()
	}
	end := int(off) + len(p)
	if end > len(n.data) {
		if int(off) > len(n.data) {
			n.data = append(n.data, make([]byte, int(off)-len(n.data))...)
		}
		n.data = append(n.data[:off], p...)
		return
	}
	copy(n.data[off:], p)
}

func (n *memNode) truncate(size int64) {
	if size < int64(len(n.synced)) {
		n.detach()
		n.shrunk = true
	}
	if int(size) <= len(n.data) {
		n.data = n.data[:size]
		return
	}
	n.data = append(n.data, make([]byte, int(size)-len(n.data))...)
}

func (n *memNode) sync() {
	n.synced = n.data[:len(n.data):len(n.data)]
	n.shared = true
	n.diverged = false
	n.shrunk = false
}

// memFile is an open file of a MemFS.
type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	gen      uint64
	flag     int
	writable bool
	readable bool
	off      int64
	closed   bool
}

var _ File = (*memFile)(nil)

// beginLocked accounts for a call on f and checks that f may serve it.
func (f *memFile) beginLocked(op Op) error {
	if err := f.fs.callLocked(op); err != nil {
		return err
	}
	if f.gen != f.fs.gen {
		return ErrCrashed
	}
	if f.closed {
		return os.ErrClosed
	}
	return nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginWriteLocked(); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		f.off = int64(len(f.node.data))
	}
	k := f.fs.roomLocked(f.node, p, f.off)
	if k > 0 {
		f.node.writeAt(p[:k], f.off)
	}
	f.off += int64(k)
	if k < len(p) {
		return k, &fs.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	return len(p), nil
}

// beginWriteLocked counts a write (injecting a fault if one is due) and
// checks the file was opened for writing.
func (f *memFile) beginWriteLocked() error {
	if err := f.beginLocked(OpWrite); err != nil {
		return &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	if !f.writable {
		return &fs.PathError{Op: "write", Path: f.name, Err: errors.New("file not open for writing")}
	}
	return nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginWriteLocked(); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: errors.New("invalid use of WriteAt on file opened with O_APPEND")}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: errors.New("negative offset")}
	}
	k := f.fs.roomLocked(f.node, p, off)
	if k > 0 {
		f.node.writeAt(p[:k], off)
	}
	if k < len(p) {
		return k, &fs.PathError{Op: "writeat", Path: f.name, Err: syscall.ENOSPC}
	}
	return len(p), nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginLocked(OpReadAt); err != nil {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	if !f.readable {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: errors.New("file not open for reading")}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: errors.New("negative offset")}
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginLocked(OpSync); err != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.node.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginLocked(OpTruncate); err != nil {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: err}
	}
	if !f.writable || size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrInvalid}
	}
	f.node.truncate(size)
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginLocked(OpStat); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return memFileInfo{name: filepath.Base(f.name), size: int64(len(f.node.data))}, nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.beginLocked(OpClose); err != nil {
		return &fs.PathError{Op: "close", Path: f.name, Err: err}
	}
	f.closed = true
	return nil
}

type memFileInfo struct {
	name string
	size int64
}

func (i memFileInfo) Name() string       { return i.name }
func (i memFileInfo) Size() int64        { return i.size }
func (i memFileInfo) Mode() fs.FileMode  { return 0o644 }
func (i memFileInfo) ModTime() time.Time { return time.Time{} }
func (i memFileInfo) IsDir() bool        { return false }
func (i memFileInfo) Sys() any           { return nil }
