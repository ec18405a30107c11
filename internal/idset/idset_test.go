package idset

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/wal"
)

var seedFlag = flag.Uint64("idset.seed", 0, "seed of TestModel (0: from the clock)")

func idOf(p []byte) (string, error) {
	r := ledger.Reader{B: p}
	id := r.String()
	return id, r.Err
}

// service is a set with its ledger, as the order service keeps them: ids
// in commit order, a snapshot appends the new ones to the ledger then
// flushes the set, and a restart restores the last snapshot and replays
// the ids committed after it.
type service struct {
	t       *testing.T
	fsys    *wal.MemFS
	lf      *ledgerFile
	s       *Set
	ids     []string // committed, in order
	snapLen int64    // the last snapshot's ledger length and count
	snapN   int
}

const dir = "/svc"

var ledgerName = path.Join(dir, ledger.FileName)

func newService(t *testing.T, seed uint64) *service {
	fsys := wal.NewMemFS(seed)
	fsys.MkdirAll(dir, 0o755)
	v := &service{t: t, fsys: fsys}
	if err := v.restart(); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *service) add(id string) {
	v.s.Add(id)
	v.ids = append(v.ids, id)
}

// snapshot is the order service's: capture, append to the ledger, flush
// the set; the snapshot lands unless the caller says otherwise.
func (v *service) snapshot(lands bool) error {
	c := v.s.Capture()
	var ps [][]byte
	for _, id := range v.ids[v.lf.count:] {
		ps = append(ps, ledger.AppendString(nil, id))
	}
	n, err := v.lf.Append(ps)
	if err != nil {
		return err
	}
	v.lf.count = len(v.ids)
	if err := c.Flush(n, len(v.ids)); err != nil {
		return err
	}
	if lands {
		v.snapLen, v.snapN = n, len(v.ids)
	}
	return nil
}

// restart restores the last snapshot: the ledger cut to its length, the
// set attached, the ids after it replayed.
func (v *service) restart() error {
	if v.s != nil {
		v.s.Close()
		v.lf.Close()
	}
	f, err := ledger.Open(v.fsys, ledgerName, v.snapLen)
	if err != nil {
		return err
	}
	v.lf = &ledgerFile{File: f, count: v.snapN}
	v.s = New()
	v.s.Restore(v.snapN)
	if err := v.s.Attach(v.fsys, dir, ledgerName, f.Len(), v.snapN, idOf); err != nil {
		return err
	}
	for _, id := range v.ids[v.snapN:] {
		v.s.Add(id)
	}
	return nil
}

type ledgerFile struct {
	*ledger.File
	count int
}

// check compares the set with the model: every committed id is in, and
// fresh ones are not.
func (v *service) check(rng *rand.Rand, seed uint64) {
	v.t.Helper()
	if v.s.Len() != int64(len(v.ids)) {
		v.t.Fatalf("seed %d: set counts %d entries, want %d", seed, v.s.Len(), len(v.ids))
	}
	for range 200 {
		if len(v.ids) > 0 {
			id := v.ids[rng.IntN(len(v.ids))]
			if ok, err := v.s.Has(id); !ok || err != nil {
				v.t.Fatalf("seed %d: committed id %s: has %v, %v", seed, id, ok, err)
			}
		}
		id := fmt.Sprintf("fresh-%d", rng.Uint64())
		if ok, err := v.s.Has(id); ok || err != nil {
			v.t.Fatalf("seed %d: fresh id %s: has %v, %v", seed, id, ok, err)
		}
	}
}

func (v *service) files() []string { return v.fsys.List(path.Join(dir, DirName)) }

// TestModel: random adds, snapshots (landed or not), crashes and restarts
// against the list of committed ids; the runs stay few.
func TestModel(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-idset.seed to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	v := newService(t, seed)
	next := 0
	for step := range 300 {
		switch k := rng.IntN(10); {
		case k < 6:
			for range rng.IntN(300) {
				v.add(fmt.Sprintf("tx-%d", next))
				next++
			}
		case k < 8:
			if err := v.snapshot(rng.IntN(4) != 0); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
		default:
			v.fsys.Crash(wal.CrashTornGarbage)
			if err := v.restart(); err != nil {
				t.Fatalf("seed %d step %d: restart: %v", seed, step, err)
			}
			for _, f := range v.files() {
				if strings.HasSuffix(f, ".tmp") {
					t.Fatalf("seed %d: %s left after a restart", seed, f)
				}
				if _, end, ok := parseRunName(f); ok && end > int64(v.snapN) {
					t.Fatalf("seed %d: run %s past the snapshot's %d entries", seed, f, v.snapN)
				}
			}
		}
		v.check(rng, seed)
		if r := v.s.Runs(); r > maxRuns {
			t.Fatalf("seed %d step %d: %d runs", seed, step, r)
		}
	}
}

// build returns a service with three landed snapshots of 1000 ids each.
func build(t *testing.T) *service {
	v := newService(t, 1)
	for i := range 3000 {
		v.add(fmt.Sprintf("tx-%d", i))
		if i%1000 == 999 {
			if err := v.snapshot(true); err != nil {
				t.Fatal(err)
			}
		}
	}
	return v
}

func (v *service) mustCheck() {
	v.t.Helper()
	v.check(rand.New(rand.NewPCG(1, 2)), 1)
}

func runFiles(v *service) []string {
	var rs []string
	for _, f := range v.files() {
		if _, _, ok := parseRunName(f); ok {
			rs = append(rs, f)
		}
	}
	return rs
}

// A crash in the middle of a run's write (before its rename) leaves a
// temporary file at most, which the restart removes; the ids are all
// there.
func TestCrashBeforeRename(t *testing.T) {
	for n := range 8 {
		v := build(t)
		for i := range 500 {
			v.add(fmt.Sprintf("more-%d", i))
		}
		v.fsys.HaltAfter(2 + n) // the ledger append and sync, then into the run's write
		if err := v.snapshot(true); err == nil {
			t.Fatalf("halt after %d: the snapshot succeeded", n)
		}
		v.fsys.Crash(wal.CrashTornGarbage)
		if err := v.restart(); err != nil {
			t.Fatal(err)
		}
		for _, f := range v.files() {
			if strings.HasSuffix(f, ".tmp") {
				t.Fatalf("halt after %d: %s left", n, f)
			}
		}
		v.mustCheck()
	}
}

// A run renamed into place for a snapshot that never landed is removed
// at the restart from the older snapshot, whose runs are used as they
// are; the ids after it come back by the replay.
func TestCrashAfterRename(t *testing.T) {
	v := build(t)
	for i := range 500 {
		v.add(fmt.Sprintf("more-%d", i))
	}
	if err := v.snapshot(false); err != nil {
		t.Fatal(err)
	}
	before := runFiles(v)
	v.fsys.Crash(wal.CrashSyncedOnly)
	if err := v.restart(); err != nil {
		t.Fatal(err)
	}
	if got := runFiles(v); len(got) != len(before)-1 || v.s.InMemory() != 500 {
		t.Fatalf("after the restart: runs %v (before %v), %d ids in memory, want one run less and 500", got, before, v.s.InMemory())
	}
	v.mustCheck()
}

// damage applies fn to the content of run file i (in name order).
func damage(t *testing.T, v *service, i int, fn func([]byte) []byte) string {
	t.Helper()
	name := path.Join(dir, DirName, runFiles(v)[i])
	b, err := v.fsys.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.fsys.WriteFile(name, fn(b)); err != nil {
		t.Fatal(err)
	}
	return name
}

// A torn, truncated, corrupt (footer or index) or missing run is found at
// the restart and its entries rebuilt from the ledger, into a run again.
func TestDamagedRunRebuilt(t *testing.T) {
	cases := map[string]func([]byte) []byte{
		"torn":   func(b []byte) []byte { return b[:len(b)/2] },
		"footer": func(b []byte) []byte { b[len(b)-10] ^= 1; return b },
		"index":  func(b []byte) []byte { b[len(b)-footerLen-5] ^= 0x10; return b },
		"magic":  func(b []byte) []byte { b[0] = 'X'; return b },
		"empty":  func([]byte) []byte { return nil },
		"longer": func(b []byte) []byte { return append(b, 0) },
	}
	for name, fn := range cases {
		for i := range 3 {
			t.Run(fmt.Sprintf("%s/run%d", name, i), func(t *testing.T) {
				v := build(t)
				v.s.Close()
				damage(t, v, i, fn)
				if err := v.restart(); err != nil {
					t.Fatal(err)
				}
				// The last run's entries are the tail past the runs: in memory.
				if got, mem := len(runFiles(v)), v.s.InMemory(); i < 2 && (got != 3 || mem != 0) || i == 2 && (got != 2 || mem != 1000) {
					t.Fatalf("%d runs and %d ids in memory after the rebuild", got, mem)
				}
				v.mustCheck()
			})
		}
	}
	t.Run("missing", func(t *testing.T) {
		v := build(t)
		v.s.Close()
		v.fsys.Remove(path.Join(dir, DirName, runFiles(v)[1]))
		if err := v.restart(); err != nil {
			t.Fatal(err)
		}
		if got := len(runFiles(v)); got != 3 {
			t.Fatalf("%d runs after the rebuild", got)
		}
		v.mustCheck()
	})
	t.Run("key", func(t *testing.T) { // a lost key: every run is rebuilt
		v := build(t)
		v.s.Close()
		v.fsys.Remove(path.Join(dir, DirName, keyName))
		if err := v.restart(); err != nil {
			t.Fatal(err)
		}
		v.mustCheck()
	})
}

// A bit flipped in a run's block is found by the lookup that reads it,
// which answers an error (the caller refuses the id), never a wrong
// "absent"; the next flush rebuilds the run from the ledger.
func TestCorruptBlock(t *testing.T) {
	v := build(t)
	v.s.Close()
	damage(t, v, 0, func(b []byte) []byte {
		for i := len(runMagic); i < len(runMagic)+8*1000; i += 64 {
			b[i] ^= 4 // every 8th hash of the first run
		}
		return b
	})
	if err := v.restart(); err != nil {
		t.Fatal(err)
	}
	errs := 0
	for _, id := range v.ids[:1000] {
		ok, err := v.s.Has(id)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatal(err)
			}
			errs++
		} else if !ok {
			t.Fatalf("%s: absent, no error", id)
		}
	}
	if errs == 0 {
		t.Fatal("no lookup found the damage")
	}
	v.add("after")
	if err := v.snapshot(true); err != nil {
		t.Fatal(err)
	}
	v.mustCheck()
	for _, id := range v.ids {
		if ok, err := v.s.Has(id); !ok || err != nil {
			t.Fatalf("%s after the repair: %v, %v", id, ok, err)
		}
	}
}

// A restart whose runs cover the snapshot reads none of the ledger: the
// ledger's entries before the runs' end can be garbage.
func TestAttachReadsOnlyTheTail(t *testing.T) {
	v := build(t)
	v.s.Close()
	b, _ := v.fsys.ReadFile(ledgerName)
	for i := int(ledger.HeaderLen); i < len(b); i++ {
		b[i] = 0xee
	}
	v.fsys.WriteFile(ledgerName, b)
	if err := v.restart(); err != nil {
		t.Fatal(err)
	}
	v.mustCheck()
}

// A snapshot that records fewer entries than the runs cover (the restore
// fell back to an older snapshot) drops the runs past it.
func TestRunAheadOfSnapshot(t *testing.T) {
	v := build(t)
	older := v.snapN
	olderLen := v.snapLen
	for i := range 500 {
		v.add(fmt.Sprintf("more-%d", i))
	}
	if err := v.snapshot(true); err != nil {
		t.Fatal(err)
	}
	v.snapN, v.snapLen = older, olderLen // the newest snapshot is damaged
	if err := v.restart(); err != nil {
		t.Fatal(err)
	}
	for _, f := range runFiles(v) {
		if _, end, _ := parseRunName(f); end > int64(older) {
			t.Fatalf("run %s kept past %d entries", f, older)
		}
	}
	v.mustCheck()
}

func FuzzDecodeRun(f *testing.F) {
	for _, n := range []int{1, 300, 1000} { // runs of 1, 2 and 4 blocks
		fsys := wal.NewMemFS(1)
		s := New()
		if err := s.Attach(fsys, dir, ledgerName, 0, 0, idOf); err != nil {
			f.Fatal(err)
		}
		for i := range n {
			s.Add(strconv.Itoa(i))
		}
		if err := s.Capture().Flush(100, n); err != nil {
			f.Fatal(err)
		}
		b, err := fsys.ReadFile(path.Join(dir, DirName, runName(0, int64(n))))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(runMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, firsts, crcs, err := decodeRun(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		r := &run{meta: m, f: nopCloser{bytes.NewReader(b)}, firsts: firsts, crcs: crcs}
		prev, n := uint64(0), int64(0)
		err = r.each(func(h uint64) error {
			if n > 0 && h <= prev {
				return fmt.Errorf("hash %d not above %d", h, prev)
			}
			prev = h
			n++
			return nil
		})
		if err == nil && n != m.n {
			t.Fatalf("%d hashes read, the footer says %d", n, m.n)
		}
		if err == nil {
			for _, h := range firsts {
				if ok, err := r.has(h, make([]byte, blockBytes)); !ok || err != nil {
					t.Fatalf("first hash %d of a block: %v %v", h, ok, err)
				}
			}
		}
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
