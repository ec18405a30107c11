package lockmgr

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestScenarios runs the scripts in testdata/. Each file starts with fresh
// tables; invariants are checked after every command. Commands (p=NAME picks
// the participant's table, default "p"):
//
//	acquire TX KEY... [p=]  granted | waiting for KEY (held by TX) | error: ...
//	release TX [p=]         the txs granted in consequence, or ok
//	abort TX                release at every participant (the coordinator's ABORT)
//	state [p=]              each locked key: holder <- queue; then Len
//	edges [p=] [holders]    Table.Edges (holders: holder edges only)
//	cycle TX [p=]           Table.FindCycle
//	cycles [holders]        FindCycles over the edges of all participants,
//	                        with the Victim of each (age: order of first acquire)
//	break [holders]         BreakCycles over the same edges
//
// Rewrite the expected output with:
//
//	go test ./lockmgr/ -run TestScenarios -rewrite
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s := &scenario{tables: map[string]*Table{}, age: map[string]uint64{}}
		datadriven.RunTest(t, path, s.run)
	})
}

// scenario is the state of one script: one Table per participant, and an
// age per tx (the order in which txs first appear; later is younger).
type scenario struct {
	tables map[string]*Table
	age    map[string]uint64
}

func (s *scenario) table(d *datadriven.TestData) (string, *Table) {
	name := "p"
	if arg, ok := d.Arg("p"); ok && len(arg.Vals) == 1 {
		name = arg.Vals[0]
	}
	tb := s.tables[name]
	if tb == nil {
		tb = New()
		s.tables[name] = tb
	}
	return name, tb
}

// words returns the bare arguments (those without "=").
func words(d *datadriven.TestData) []string {
	var w []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			w = append(w, a.Key)
		}
	}
	return w
}

func (s *scenario) names() []string {
	names := make([]string, 0, len(s.tables))
	for n := range s.tables {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (s *scenario) ageOf(tx string) uint64 { return s.age[tx] }

func (s *scenario) run(t *testing.T, d *datadriven.TestData) string {
	out := s.exec(t, d)
	for _, n := range s.names() {
		if err := s.tables[n].checkInvariants(); err != nil {
			t.Fatalf("%s: participant %s: invariants: %v", d.Pos, n, err)
		}
	}
	return out
}

func (s *scenario) exec(t *testing.T, d *datadriven.TestData) string {
	args := words(d)
	need := func(n int) {
		if len(args) < n {
			d.Fatalf(t, "%s needs %d argument(s)", d.Cmd, n)
		}
	}
	switch d.Cmd {
	case "acquire":
		need(1)
		_, tb := s.table(d)
		tx := args[0]
		if _, ok := s.age[tx]; !ok {
			s.age[tx] = uint64(len(s.age) + 1)
		}
		ok, err := tb.Acquire(tx, args[1:])
		switch {
		case err != nil:
			return fmt.Sprintf("error: %v\n", err)
		case ok:
			return "granted\n"
		default:
			key, _ := tb.Waiting(tx)
			holder, _ := tb.WaitsFor(tx)
			return fmt.Sprintf("waiting for %s (held by %s)\n", key, holder)
		}

	case "release":
		need(1)
		_, tb := s.table(d)
		return grantedLine(tb.Release(args[0]))

	case "abort":
		// Release at every participant, as the coordinator's ABORT does.
		need(1)
		var b strings.Builder
		for _, n := range s.names() {
			fmt.Fprintf(&b, "%s: %s", n, grantedLine(s.tables[n].Release(args[0])))
		}
		return b.String()

	case "state":
		_, tb := s.table(d)
		return dump(tb)

	case "edges":
		// edges [p=name] [holders]: holders leaves out ahead edges.
		_, tb := s.table(d)
		edges := tb.AppendEdges(nil, !d.HasArg("holders"))
		if len(edges) == 0 {
			return "none\n"
		}
		var b strings.Builder
		for _, e := range edges {
			b.WriteString(e.String() + "\n")
		}
		return b.String()

	case "cycle":
		need(1)
		_, tb := s.table(d)
		if c := tb.FindCycle(args[0]); c != nil {
			return "dependency cycle detected " + strings.Join(c, "->") + "\n"
		}
		return "no cycle\n"

	case "cycles", "break":
		// The global detector: merge the edges of every participant (or,
		// with holders, their holder edges only).
		var edges []Edge
		for _, n := range s.names() {
			edges = s.tables[n].AppendEdges(edges, !d.HasArg("holders"))
		}
		if d.Cmd == "break" {
			v := BreakCycles(edges, s.ageOf)
			if v == nil {
				return "no victims\n"
			}
			return "victims: " + strings.Join(v, " ") + "\n"
		}
		cs := FindCycles(edges)
		if cs == nil {
			return "no cycle\n"
		}
		var b strings.Builder
		for _, c := range cs {
			fmt.Fprintf(&b, "dependency cycle detected %s victim=%s\n", strings.Join(c, "->"), Victim(c, s.ageOf))
		}
		return b.String()

	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
		return ""
	}
}

func grantedLine(g []string) string {
	if len(g) == 0 {
		return "ok\n"
	}
	return "granted " + strings.Join(g, " ") + "\n"
}

// dump renders a table: one line per locked key (holder, then its queue),
// then the counts.
func dump(tb *Table) string {
	keys := make([]string, 0, len(tb.keys))
	for k := range tb.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s", k, tb.keys[k].holder.id)
		if q := tb.Queue(k); q != nil {
			fmt.Fprintf(&b, " <- %s", strings.Join(q, " "))
		}
		b.WriteString("\n")
	}
	held, waiting := tb.Len()
	fmt.Fprintf(&b, "held=%d waiting=%d\n", held, waiting)
	return b.String()
}
