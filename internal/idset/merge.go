package idset

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dtx-dev/dtx/internal/ledger"
)

// Merging. The runs are kept few by size tiers: after each flush, the
// newest runs (but the two newest, see below) whose sizes add up to at
// least half the size of the run before them are merged into one, so
// sizes fall geometrically from the oldest run and there are about
// log2(ids / ids per snapshot) of them; past maxRuns the newest two are
// merged whatever their sizes. Every hash is rewritten O(log n) times.
//
// The two newest runs are never merged: they end at the entry counts of
// the snapshots recovery may fall back to (the newest snapshot, and the
// one before it if the newest is torn or never landed), so that Attach at
// either count finds a run ending exactly there and reads only the ledger
// past it. A run merged across a snapshot's count is dropped by an Attach
// at that count, and its entries rebuilt from the ledger: slower, still
// right.

// maxRuns bounds the runs a lookup reads.
const maxRuns = 12

// protected is how many of the newest runs are never merged.
const protected = 2

func (s *Set) merge() error {
	for {
		rs := s.runs // Flush alone changes runs: no lock to read them here
		k := len(rs) - protected
		if k < 2 {
			return nil
		}
		j := k - 1
		sum := rs[j].n
		for j > 0 && rs[j-1].n <= 2*sum {
			j--
			sum += rs[j].n
		}
		if k-j < 2 {
			if len(rs) <= maxRuns {
				return nil
			}
			j = k - 2
		}
		if err := s.mergeRange(j, k); err != nil {
			if errors.Is(err, ErrCorrupt) {
				return nil // the damaged run is rebuilt at the next flush
			}
			return err
		}
	}
}

// mergeRange merges runs [j, k) into one.
func (s *Set) mergeRange(j, k int) error {
	in := slices.Clone(s.runs[j:k])
	type cursor struct {
		r   *run
		buf []byte
		blk int
		b   []byte
	}
	cs := make([]*cursor, 0, len(in))
	for _, r := range in {
		cs = append(cs, &cursor{r: r, buf: make([]byte, blockBytes), blk: -1})
	}
	var err error
	next := func(c *cursor) bool { // advance c to its next hash; false at its end
		if len(c.b) > 8 {
			c.b = c.b[8:]
			return true
		}
		c.blk++
		if c.blk >= len(c.r.firsts) {
			c.b = nil
			return false
		}
		c.b, err = c.r.block(c.blk, c.buf)
		return err == nil
	}
	live := cs[:0]
	for _, c := range cs {
		if next(c) {
			live = append(live, c)
		}
	}
	if err != nil {
		return err
	}
	m := meta{start: in[0].start, end: in[len(in)-1].end, startOff: in[0].startOff, endOff: in[len(in)-1].endOff}
	out, err := s.write(m, func(add func(uint64)) error {
		for len(live) > 0 && err == nil {
			mi := 0
			for i := 1; i < len(live); i++ {
				if le64(live[i].b) < le64(live[mi].b) {
					mi = i
				}
			}
			add(le64(live[mi].b))
			if !next(live[mi]) {
				live = slices.Delete(live, mi, mi+1)
			}
		}
		return err // an input was damaged: the output is not whole
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.runs = slices.Replace(s.runs, j, k, out)
	s.mu.Unlock()
	for _, r := range in {
		r.f.Close()
		s.fsys.Remove(r.name)
	}
	if err := s.fsys.SyncDir(s.dir); err != nil {
		return fmt.Errorf("idset: %w", err)
	}
	return nil
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// repair rebuilds from the ledger every run a lookup or merge found
// damaged, replacing its file (same name: a rename over it).
func (s *Set) repair() error {
	for i, r := range s.runs {
		if !r.damaged.Load() {
			continue
		}
		var hashes []uint64
		n := r.start
		err := ledger.ScanFrom(s.fsys, s.ledger, r.startOff, r.endOff, func(off int64, p []byte) error {
			id, err := s.idOf(p)
			if err != nil {
				return fmt.Errorf("%w: %s: entry at offset %d: %v", ledger.ErrCorrupt, s.ledger, off, err)
			}
			hashes = append(hashes, sum64(s.k0, s.k1, id))
			n++
			return nil
		})
		if err == nil && n != r.end {
			err = fmt.Errorf("%w: %s: %d entries between offsets %d and %d, want %d", ledger.ErrCorrupt, s.ledger, n-r.start, r.startOff, r.endOff, r.end-r.start)
		}
		if err != nil {
			return fmt.Errorf("idset: rebuild %s: %w", r.name, err)
		}
		slices.Sort(hashes)
		nr, err := s.write(r.meta, each(hashes))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.runs[i] = nr
		s.mu.Unlock()
		r.f.Close()
	}
	return nil
}
