// Package failpoint kills the process at named crash points, for tests that
// run dtx as a real process: DTX_FAILPOINT=coordinator:after-commit-durable
// makes the process SIGKILL itself right after the coordinator's COMMIT
// record is durable and before any COMMIT message or reply leaves.
//
// A spec is a comma-separated list of COMPONENT:POINT[@N]. COMPONENT is
// coordinator, inventory, payment, order (any participant id) or * (any
// participant). POINT is before-X-durable or after-X-durable, where X names
// a forced record: commit (coordinator), prepared or committed
// (participants). Every component also has the points of its snapshots
// (node.WriteSnapshot: a participant's or the coordinator's):
// snapshot-written (the temporary file
// written, not synced), snapshot-synced (synced, not renamed),
// snapshot-renamed (renamed, the directory not synced), compact-before (the
// snapshot durable, its log not yet compacted) and compact-mid (right
// after a log segment is removed by the compaction, before the directory
// sync: a compaction cut in the middle). @N fires on the N-th hit (default
// 1).
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// EnvVar is the environment variable cmd/dtx reads once at start.
const EnvVar = "DTX_FAILPOINT"

type rule struct {
	component string
	after     bool
	rec       twopc.RecType
	snap      string // a snapshot point instead of a record
	n         int
}

// snapPoints are the snapshot points and the wal step each stops after (0:
// not a step of writing the file).
var snapPoints = map[string]wal.SnapshotStep{
	"snapshot-written": wal.SnapWrite,
	"snapshot-synced":  wal.SnapSynced,
	"snapshot-renamed": wal.SnapRenamed,
	"compact-before":   0,
	"compact-mid":      0,
}

// Set is a parsed spec. The zero Set has no failpoints.
type Set struct {
	rules []rule
	mu    *sync.Mutex
	hits  map[int]int
	// Kill is what a failpoint does (default: SIGKILL this process).
	Kill func(point string)
}

var records = map[string]twopc.RecType{
	"commit":    twopc.RecCommit,
	"prepared":  twopc.RecPrepared,
	"committed": twopc.RecCommitted,
}

// Parse reads a spec; "" is the empty set.
func Parse(spec string) (Set, error) {
	s := Set{mu: &sync.Mutex{}, hits: map[int]int{}}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		comp, point, ok := strings.Cut(part, ":")
		if !ok || comp == "" {
			return Set{}, fmt.Errorf("failpoint %q: want COMPONENT:POINT[@N]", part)
		}
		r := rule{component: comp, n: 1}
		if p, n, ok := strings.Cut(point, "@"); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				return Set{}, fmt.Errorf("failpoint %q: @N must be a positive integer", part)
			}
			point, r.n = p, v
		}
		if _, ok := snapPoints[point]; ok {
			r.snap = point
			s.rules = append(s.rules, r)
			continue
		}
		var what string
		switch {
		case strings.HasPrefix(point, "before-") && strings.HasSuffix(point, "-durable"):
			what = strings.TrimSuffix(strings.TrimPrefix(point, "before-"), "-durable")
		case strings.HasPrefix(point, "after-") && strings.HasSuffix(point, "-durable"):
			what, r.after = strings.TrimSuffix(strings.TrimPrefix(point, "after-"), "-durable"), true
		default:
			return Set{}, fmt.Errorf("failpoint %q: point must be before-X-durable, after-X-durable or a snapshot point (snapshot-written, snapshot-synced, snapshot-renamed, compact-before, compact-mid)", part)
		}
		rec, ok := records[what]
		if !ok {
			return Set{}, fmt.Errorf("failpoint %q: unknown record %q (commit, prepared, committed)", part, what)
		}
		if (rec == twopc.RecCommit) != (comp == twopc.CoordinatorID) {
			return Set{}, fmt.Errorf("failpoint %q: %s records are not written by %s", part, what, comp)
		}
		r.rec = rec
		s.rules = append(s.rules, r)
	}
	return s, nil
}

// FromEnv parses DTX_FAILPOINT.
func FromEnv() (Set, error) { return Parse(os.Getenv(EnvVar)) }

// Empty reports whether the set has no failpoints.
func (s Set) Empty() bool { return len(s.rules) == 0 }

// Hooks returns the node hooks of component (zero hooks if none apply).
func (s Set) Hooks(component string) node.Hooks {
	var h node.Hooks
	var before, after []int
	for i, r := range s.rules {
		if !r.applies(component) || r.snap != "" {
			continue
		}
		if r.after {
			after = append(after, i)
		} else {
			before = append(before, i)
		}
	}
	check := func(idx []int) func(*twopc.Ready) bool {
		return func(rd *twopc.Ready) bool {
			for _, i := range idx {
				r := s.rules[i]
				for j := range rd.Records {
					if rd.Records[j].Type != r.rec {
						continue
					}
					s.mu.Lock()
					s.hits[i]++
					fire := s.hits[i] == r.n
					s.mu.Unlock()
					if fire {
						s.kill(fmt.Sprintf("%s:%s", component, r))
						return true
					}
				}
			}
			return false
		}
	}
	if len(before) > 0 {
		fire := check(before)
		h.CrashBeforeLog = func(rd *twopc.Ready, _ bool) bool { return fire(rd) }
	}
	if len(after) > 0 {
		h.CrashAfterLog = check(after)
	}
	return h
}

func (r rule) applies(component string) bool {
	return r.component == component || r.component == "*" && component != twopc.CoordinatorID
}

// hit counts a hit of rule i and reports whether it fires.
func (s Set) hit(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits[i]++
	return s.hits[i] == s.rules[i].n
}

// snapRules returns the indexes of component's rules at snapshot point p.
func (s Set) snapRules(component, p string) []int {
	var idx []int
	for i, r := range s.rules {
		if r.snap == p && r.applies(component) {
			idx = append(idx, i)
		}
	}
	return idx
}

func (s Set) fire(component string, idx []int) {
	for _, i := range idx {
		if s.hit(i) {
			s.kill(fmt.Sprintf("%s:%s", component, s.rules[i]))
		}
	}
}

// SnapshotHook returns the snapshot hook (node.SnapshotHooks.Step) of component
// (nil if no snapshot-written, -synced or -renamed point applies).
func (s Set) SnapshotHook(component string) func(wal.SnapshotStep) error {
	byStep := map[wal.SnapshotStep][]int{}
	for p, step := range snapPoints {
		if step != 0 {
			if idx := s.snapRules(component, p); len(idx) > 0 {
				byStep[step] = idx
			}
		}
	}
	if len(byStep) == 0 {
		return nil
	}
	return func(step wal.SnapshotStep) error {
		s.fire(component, byStep[step])
		return nil
	}
}

// CompactHook returns the compaction hook (node.SnapshotHooks.BeforeCompact) of component
// (nil if compact-before does not apply).
func (s Set) CompactHook(component string) func(upTo uint64) {
	idx := s.snapRules(component, "compact-before")
	if len(idx) == 0 {
		return nil
	}
	return func(uint64) { s.fire(component, idx) }
}

// FS returns fsys wrapped so that compact-mid fires after a log segment's
// removal (fsys itself if compact-mid does not apply to component).
func (s Set) FS(component string, fsys wal.FS) wal.FS {
	idx := s.snapRules(component, "compact-mid")
	if len(idx) == 0 {
		return fsys
	}
	return removeFS{FS: fsys, after: func(name string) {
		if strings.HasSuffix(name, ".wal") {
			s.fire(component, idx)
		}
	}}
}

type removeFS struct {
	wal.FS
	after func(name string)
}

func (f removeFS) Remove(name string) error {
	err := f.FS.Remove(name)
	if err == nil {
		f.after(name)
	}
	return err
}

func (r rule) String() string {
	if r.snap != "" {
		return fmt.Sprintf("%s@%d", r.snap, r.n)
	}
	w := "before"
	if r.after {
		w = "after"
	}
	return fmt.Sprintf("%s-%s-durable@%d", w, strings.ToLower(r.rec.String()), r.n)
}

func (s Set) kill(point string) {
	if s.Kill != nil {
		s.Kill(point)
		return
	}
	fmt.Fprintf(os.Stderr, "dtx: failpoint %s: SIGKILL\n", point)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never returns
}
