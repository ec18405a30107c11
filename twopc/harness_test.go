package twopc

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// kv is a test Resource: a branch's op is "key" or "key=fail" (votes NO).
// It records every call so tests can check effects.
type kv struct {
	prepared  map[string]string // tx -> key
	committed map[string]string
	aborted   map[string]bool
	// calls counts Prepare, Commit and Abort calls per tx ("prepare t1").
	calls map[string]int
}

func newKV() *kv {
	return &kv{prepared: map[string]string{}, committed: map[string]string{}, aborted: map[string]bool{}, calls: map[string]int{}}
}

func (r *kv) Keys(tx string, op []byte) ([]string, error) {
	if len(op) == 0 {
		return nil, errors.New("empty op")
	}
	key, _, _ := strings.Cut(string(op), "=")
	return []string{key}, nil
}

func (r *kv) Prepare(tx string, op []byte) error {
	if strings.HasSuffix(string(op), "=fail") {
		return errors.New("business rule says no")
	}
	if _, ok := r.prepared[tx]; ok {
		return fmt.Errorf("prepared twice: %s", tx)
	}
	r.prepared[tx] = string(op)
	r.calls["prepare "+tx]++
	return nil
}

func (r *kv) Commit(tx string, _ []byte) {
	k, ok := r.prepared[tx]
	if !ok {
		panic("commit of unprepared " + tx)
	}
	delete(r.prepared, tx)
	r.committed[tx] = k
	r.calls["commit "+tx]++
}

func (r *kv) Abort(tx string, _ []byte) {
	if _, ok := r.prepared[tx]; !ok {
		panic("abort of unprepared " + tx)
	}
	delete(r.prepared, tx)
	r.aborted[tx] = true
	r.calls["abort "+tx]++
}

// log is a test log: what was appended, and how much of it is durable.
type memLog struct {
	recs    []Record
	durable int
}

func (l *memLog) apply(rd *Ready) {
	for _, r := range rd.Records {
		// Round-trip through the codec, as the real driver does.
		b := AppendRecord(nil, &r)
		got, err := DecodeRecord(r.Type, b)
		if err != nil {
			panic(err)
		}
		l.recs = append(l.recs, got)
	}
	if rd.MustSync() {
		l.durable = len(l.recs)
	}
}

// crash drops the unsynced tail.
func (l *memLog) crash() { l.recs = l.recs[:l.durable] }

func (l *memLog) types() []string {
	var s []string
	for _, r := range l.recs {
		s = append(s, r.Type.String())
	}
	return s
}

func testCoordConfig() CoordinatorConfig {
	return CoordinatorConfig{ID: CoordinatorID, PrepareTimeout: 10, RetryBase: 2, RetryMax: 8, MaxInflight: 100}
}

func testPartConfig(id string) ParticipantConfig {
	return ParticipantConfig{ID: id, Coordinator: CoordinatorID, LockTimeout: 5, InquireAfter: 20, InquireMax: 40}
}

func mustCoord(t testing.TB, l *memLog) *Coordinator {
	t.Helper()
	c, err := NewCoordinator(testCoordConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := c.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	c.Start()
	return c
}

func mustPart(t testing.TB, id string, l *memLog, res *kv) *Participant {
	return mustPartPolicy(t, id, l, res, DeadlockDetect)
}

func mustPartPolicy(t testing.TB, id string, l *memLog, res *kv, policy DeadlockPolicy) *Participant {
	t.Helper()
	cfg := testPartConfig(id)
	cfg.Deadlock = policy
	p, err := NewParticipant(cfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.recs {
		if err := p.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	p.Start()
	return p
}

// take carries out a machine's Ready on its log and returns it.
func take(l *memLog, m interface {
	Ready() Ready
	Advance()
}) Ready {
	rd := m.Ready().Clone()
	l.apply(&rd)
	m.Advance()
	return rd
}

func msgsOf(rd Ready, typ MsgType) []Message {
	var out []Message
	for _, m := range rd.Messages {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func hasRecord(rd Ready, typ RecType) bool {
	return slices.ContainsFunc(rd.Records, func(r Record) bool { return r.Type == typ })
}
