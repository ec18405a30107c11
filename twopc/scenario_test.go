package twopc

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// Scenario scripts in testdata/ drive a coordinator and participants step by
// step. Commands:
//
//	cluster policy=detect|wound-wait|timeout nodes=a,b,c [lock-timeout=N] [attempts=N]
//	                             attempts is the coordinator's MaxAttempts
//	propose TX NODE=KEYS...      KEYS is one key or several joined by '+'
//	deliver [to=NODE] [type=TYPE] [tx=TX] [attempt=N] [n=N]
//	                             deliver queued messages matching all filters,
//	                             oldest first (n of them, default all)
//	drop [to=NODE] [type=TYPE] [tx=TX] [attempt=N] [n=N]
//	hold [to=NODE] [type=TYPE] [tx=TX] [attempt=N] [n=N]
//	                             take messages off the network, to inject later
//	dup [to=NODE] [type=TYPE] [tx=TX] [attempt=N] [n=N]
//	                             hold a copy of queued messages (a duplicate
//	                             the network will deliver late, on release)
//	release                      put every held message back on the network
//	inject type=TYPE from=NODE tx=TX [attempt=N]
//	                             deliver a message from NODE to the
//	                             coordinator (an INQUIRE, say)
//	tick [n=N]                   tick every machine n times
//	stabilize                    deliver everything until the network is empty
//	queue                        show queued messages
//	state                        every participant's branches (@N: attempt N>1)
//	res                          every participant's Resource calls and locks
//	restart NODE                 crash NODE (losing its unsynced log tail) and
//	                             rebuild it from its log with a fresh Resource
//	ts TX                        the coordinator's timestamp and attempt of TX
//
// Every command prints what the machines did: messages sent (after their
// records were synced, as the driver would), outcomes, deadlock events and
// stale messages ignored.
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var s *scenario
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "cluster" {
				s = newScenario(t, d)
				return "ok\n"
			}
			if s == nil {
				t.Fatalf("%s: first command must be cluster", d.Pos)
			}
			return s.exec(t, d)
		})
	})
}

// multiKV is kv with multi-key ops: "x+y" locks x then y.
type multiKV struct{ *kv }

func (r multiKV) Keys(tx string, op []byte) ([]string, error) {
	if len(op) == 0 {
		return nil, errors.New("empty op")
	}
	s, _, _ := strings.Cut(string(op), "=")
	return strings.Split(s, "+"), nil
}

type scenario struct {
	coord  *Coordinator
	clog   memLog
	parts  map[string]*Participant
	plogs  map[string]*memLog
	res    map[string]*kv
	pcfg   map[string]ParticipantConfig
	nodes  []string
	queue  []Message
	held   []Message
	out    strings.Builder
	policy DeadlockPolicy
}

func newScenario(t *testing.T, d *datadriven.TestData) *scenario {
	s := &scenario{parts: map[string]*Participant{}, plogs: map[string]*memLog{}, res: map[string]*kv{}, pcfg: map[string]ParticipantConfig{}}
	policy := DeadlockDetect
	lockTimeout := uint64(1000)
	attempts := 0
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "policy":
			p, err := ParseDeadlockPolicy(a.Vals[0])
			if err != nil {
				t.Fatal(err)
			}
			policy = p
		case "nodes":
			s.nodes = strings.Split(a.Vals[0], ",")
		case "lock-timeout":
			n, _ := strconv.Atoi(a.Vals[0])
			lockTimeout = uint64(n)
		case "attempts":
			attempts, _ = strconv.Atoi(a.Vals[0])
		}
	}
	cc := testCoordConfig()
	cc.PrepareTimeout = 1000
	cc.MaxAttempts = attempts
	c, err := NewCoordinator(cc)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	s.coord = c
	s.policy = policy
	for _, n := range s.nodes {
		pc := testPartConfig(n)
		pc.Deadlock = policy
		pc.LockTimeout = lockTimeout
		pc.DetectEvery, pc.DetectAfter = 2, 2
		pc.InquireAfter, pc.InquireMax = 10000, 10000
		s.pcfg[n] = pc
		s.res[n] = newKV()
		p, err := NewParticipant(pc, multiKV{s.res[n]})
		if err != nil {
			t.Fatal(err)
		}
		p.Start()
		s.parts[n] = p
		s.plogs[n] = &memLog{}
	}
	s.flush()
	s.out.Reset()
	s.queue = nil
	return s
}

func (s *scenario) flush() {
	rd := take(&s.clog, s.coord)
	s.emit(CoordinatorID, rd)
	for _, n := range s.nodes {
		rd := take(s.plogs[n], s.parts[n])
		s.emit(n, rd)
	}
}

func (s *scenario) emit(node string, rd Ready) {
	for _, r := range rd.Records {
		if r.Type == RecEvent && (strings.HasPrefix(r.Reason, "deadlock") || strings.Contains(r.Reason, "attempt")) {
			fmt.Fprintf(&s.out, "%s: %s\n", node, r.Reason)
		}
		if r.Type == RecRestart {
			fmt.Fprintf(&s.out, "%s: log RESTART %s attempt %d -> %d\n", node, r.Tx, r.Attempt, r.Attempt+1)
		}
	}
	for _, m := range rd.Messages {
		s.queue = append(s.queue, m)
		fmt.Fprintf(&s.out, "%s: send %s\n", node, describe(m))
	}
	for _, o := range rd.Outcomes {
		if o.Committed {
			fmt.Fprintf(&s.out, "%s: outcome %s COMMITTED\n", node, o.Tx)
		} else {
			fmt.Fprintf(&s.out, "%s: outcome %s ROLLED_BACK %s\n", node, o.Tx, o.Reason)
		}
	}
}

func describe(m Message) string {
	s := fmt.Sprintf("%s %s->%s", m.Type, m.Tx, m.To)
	if m.Type == MsgWaits {
		var es []string
		for _, w := range m.Waits {
			es = append(es, w.Waiter+"->"+w.Holder)
		}
		s = fmt.Sprintf("WAITS %s->%s [%s]", m.From, m.To, strings.Join(es, " "))
	}
	if m.Attempt > 1 {
		s += fmt.Sprintf(" attempt=%d", m.Attempt)
	}
	if m.Type == MsgPrepare && m.Attempt > 1 {
		s += fmt.Sprintf(" ts=%d", m.TS&(1<<40-1))
	}
	if m.Type == MsgVote {
		s += " " + m.Vote.String()
	}
	if m.Reason != "" && (m.Type != MsgAbort || strings.Contains(m.Reason, "superseded")) {
		s += " (" + m.Reason + ")"
	}
	return s
}

func (s *scenario) deliver(m Message) {
	if m.To == CoordinatorID {
		s.coord.Step(m)
	} else {
		s.parts[m.To].Step(m)
	}
	s.flush()
}

func matches(m Message, d *datadriven.TestData) bool {
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "to":
			if m.To != a.Vals[0] {
				return false
			}
		case "type":
			if m.Type.String() != strings.ToUpper(a.Vals[0]) {
				return false
			}
		case "tx":
			if m.Tx != a.Vals[0] {
				return false
			}
		case "attempt":
			if n, _ := strconv.Atoi(a.Vals[0]); AttemptOf(m.Attempt) != uint32(n) {
				return false
			}
		}
	}
	return true
}

func (s *scenario) exec(t *testing.T, d *datadriven.TestData) string {
	s.out.Reset()
	switch d.Cmd {
	case "propose":
		tx := d.CmdArgs[0].Key
		var bs []Branch
		for _, a := range d.CmdArgs[1:] {
			bs = append(bs, Branch{Node: a.Key, Op: []byte(a.Vals[0])})
		}
		if err := s.coord.Propose(tx, bs); err != nil {
			return "error: " + err.Error() + "\n"
		}
		s.flush()
	case "dup":
		for _, m := range s.queue {
			if matches(m, d) {
				s.held = append(s.held, m)
				fmt.Fprintf(&s.out, "duplicated %s\n", describe(m))
			}
		}
	case "inject":
		m := Message{To: CoordinatorID}
		for _, a := range d.CmdArgs {
			switch a.Key {
			case "type":
				for typ := MsgType(1); typ < msgTypeEnd; typ++ {
					if typ.String() == strings.ToUpper(a.Vals[0]) {
						m.Type = typ
					}
				}
			case "from":
				m.From = a.Vals[0]
			case "tx":
				m.Tx = a.Vals[0]
			case "attempt":
				n, _ := strconv.Atoi(a.Vals[0])
				m.Attempt = uint32(n)
			}
		}
		s.deliver(m)
	case "deliver", "drop", "hold":
		limit := -1
		for _, a := range d.CmdArgs {
			if a.Key == "n" {
				limit, _ = strconv.Atoi(a.Vals[0])
			}
		}
		var picked []Message
		rest := s.queue[:0:0]
		for _, m := range s.queue {
			if (limit < 0 || len(picked) < limit) && matches(m, d) {
				picked = append(picked, m)
			} else {
				rest = append(rest, m)
			}
		}
		s.queue = rest
		if d.Cmd == "drop" || d.Cmd == "hold" {
			for _, m := range picked {
				fmt.Fprintf(&s.out, "%s %s\n", map[string]string{"drop": "dropped", "hold": "held"}[d.Cmd], describe(m))
			}
			if d.Cmd == "hold" {
				s.held = append(s.held, picked...)
			}
			break
		}
		for _, m := range picked {
			s.deliver(m)
		}
	case "tick":
		n := 1
		for _, a := range d.CmdArgs {
			if a.Key == "n" {
				n, _ = strconv.Atoi(a.Vals[0])
			}
		}
		for range n {
			s.coord.Tick()
			for _, p := range s.nodes {
				s.parts[p].Tick()
			}
			s.flush()
		}
	case "stabilize":
		for i := 0; len(s.queue) > 0; i++ {
			if i > 10000 {
				t.Fatalf("%s: does not stabilize", d.Pos)
			}
			m := s.queue[0]
			s.queue = s.queue[1:]
			s.deliver(m)
		}
	case "release":
		s.queue = append(s.queue, s.held...)
		s.held = nil
	case "restart":
		n := d.CmdArgs[0].Key
		s.plogs[n].crash()
		s.res[n] = newKV()
		p, err := NewParticipant(s.pcfg[n], multiKV{s.res[n]})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range s.plogs[n].recs {
			if err := p.Restore(r); err != nil {
				return "error: " + err.Error() + "\n"
			}
		}
		s.parts[n] = p
		p.Start()
		s.flush()
	case "ts":
		tx := d.CmdArgs[0].Key
		t := s.coord.active[tx]
		if t == nil {
			st, _ := s.coord.State(tx)
			fmt.Fprintf(&s.out, "%s: %s\n", tx, st)
			break
		}
		fmt.Fprintf(&s.out, "%s: %s attempt=%d ts=%d\n", tx, t.state, t.attempt, t.ts&(1<<40-1))
	case "res":
		for _, n := range s.nodes {
			r := s.res[n]
			var calls []string
			for _, k := range slices.Sorted(maps.Keys(r.calls)) {
				calls = append(calls, fmt.Sprintf("%s=%d", k, r.calls[k]))
			}
			var locks []string
			for _, k := range []string{"A", "B", "U", "V", "X"} {
				lt := s.parts[n].Locks()
				if h, ok := lt.Holder(k); ok {
					l := k + ":" + h
					if q := lt.Queue(k); len(q) > 0 {
						l += "<-" + strings.Join(q, ",")
					}
					locks = append(locks, l)
				}
			}
			fmt.Fprintf(&s.out, "%s: calls [%s] locks [%s]\n", n, strings.Join(calls, " "), strings.Join(locks, " "))
		}
	case "queue":
		for _, m := range s.queue {
			fmt.Fprintf(&s.out, "%s\n", describe(m))
		}
	case "state":
		for _, n := range s.nodes {
			p := s.parts[n]
			var txs []string
			for tx := range p.branches {
				txs = append(txs, tx)
			}
			p.finished.All(func(tx string, _ txVal, _ string) bool {
				if p.branches[tx] == nil {
					txs = append(txs, tx)
				}
				return true
			})
			slices.Sort(txs)
			var parts []string
			for _, tx := range txs {
				st, _ := p.Branch(tx)
				if a := p.branchOf(tx).attempt; a > 1 {
					parts = append(parts, fmt.Sprintf("%s=%s@%d", tx, st, a))
				} else {
					parts = append(parts, tx+"="+st.String())
				}
			}
			fmt.Fprintf(&s.out, "%s: %s\n", n, strings.Join(parts, " "))
		}
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if s.out.Len() == 0 {
		return "ok\n"
	}
	return s.out.String()
}
