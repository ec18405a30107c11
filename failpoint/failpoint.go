// Package failpoint kills the process at named crash points, for tests that
// run dtx as a real process: DTX_FAILPOINT=coordinator:after-commit-durable
// makes the process SIGKILL itself right after the coordinator's COMMIT
// record is durable and before any COMMIT message or reply leaves.
//
// A spec is a comma-separated list of COMPONENT:POINT[@N]. COMPONENT is
// coordinator, inventory, payment, order (any participant id) or * (any
// participant). POINT is before-X-durable or after-X-durable, where X names
// a forced record: commit (coordinator), prepared or committed
// (participants). @N fires on the N-th hit (default 1).
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
)

// EnvVar is the environment variable cmd/dtx reads once at start.
const EnvVar = "DTX_FAILPOINT"

type rule struct {
	component string
	after     bool
	rec       twopc.RecType
	n         int
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
		var what string
		switch {
		case strings.HasPrefix(point, "before-") && strings.HasSuffix(point, "-durable"):
			what = strings.TrimSuffix(strings.TrimPrefix(point, "before-"), "-durable")
		case strings.HasPrefix(point, "after-") && strings.HasSuffix(point, "-durable"):
			what, r.after = strings.TrimSuffix(strings.TrimPrefix(point, "after-"), "-durable"), true
		default:
			return Set{}, fmt.Errorf("failpoint %q: point must be before-X-durable or after-X-durable", part)
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
		if r.component != component && !(r.component == "*" && component != twopc.CoordinatorID) {
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

func (r rule) String() string {
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
