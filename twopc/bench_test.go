package twopc

import (
	"strconv"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nopRes is a Resource that locks one key per branch and keeps nothing:
// the benchmarks measure the protocol, not a business.
type nopRes struct{}

func (nopRes) Keys(_ string, op []byte) ([]string, error) { return []string{string(op)}, nil }
func (nopRes) Prepare(string, []byte) error               { return nil }
func (nopRes) Commit(string, []byte)                      {}
func (nopRes) Abort(string, []byte)                       {}

// benchCluster is a coordinator and three participants wired together in
// memory, with records encoded as the node does (no I/O).
type benchCluster struct {
	c     *Coordinator
	parts map[string]*Participant
	buf   []byte
	queue []Message
}

func newBenchCluster(b *testing.B) *benchCluster {
	cfg := DefaultCoordinatorConfig()
	cfg.MaxInflight = 0
	c, err := NewCoordinator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	c.Start()
	bc := &benchCluster{c: c, parts: map[string]*Participant{}}
	for _, id := range []string{"inventory", "payment", "order"} {
		p, err := NewParticipant(DefaultParticipantConfig(id), nopRes{})
		if err != nil {
			b.Fatal(err)
		}
		p.Start()
		bc.parts[id] = p
	}
	bc.run()
	return bc
}

// flush carries out m's Ready: encodes its records, queues its messages.
func (bc *benchCluster) flush(m interface {
	HasReady() bool
	Ready() Ready
	Advance()
}) {
	if !m.HasReady() {
		return
	}
	rd := m.Ready()
	bc.buf = bc.buf[:0]
	for i := range rd.Records {
		bc.buf = AppendRecord(bc.buf, &rd.Records[i])
	}
	bc.queue = append(bc.queue, rd.Messages...)
	m.Advance()
}

// run delivers messages until none is left.
func (bc *benchCluster) run() {
	bc.flush(bc.c)
	for len(bc.queue) > 0 {
		batch := bc.queue
		bc.queue = nil
		for _, m := range batch {
			if m.To == CoordinatorID {
				bc.c.Step(m)
			} else if p := bc.parts[m.To]; p != nil {
				p.Step(m)
			}
		}
		bc.flush(bc.c)
		for _, p := range bc.parts {
			bc.flush(p)
		}
	}
}

// tick advances every machine's clock by one tick (timers fire, as they do
// every millisecond in a deployment).
func (bc *benchCluster) tick() {
	bc.c.Tick()
	for _, p := range bc.parts {
		p.Tick()
	}
	bc.run()
}

// BenchmarkTransaction measures the CPU cost of the protocol for one
// committed three-branch transaction: every state-machine step, record
// encoding and message of both phases, in batches of 1 and 256
// transactions in flight (as group commit delivers them).
func BenchmarkTransaction(b *testing.B) {
	for _, batch := range []int{1, 256} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			bc := newBenchCluster(b)
			ids := make([]string, b.N)
			ops := make([][]Branch, b.N)
			for i := range ids {
				ids[i] = "t" + strconv.Itoa(i)
				op := []byte("k" + strconv.Itoa(i))
				ops[i] = []Branch{{Node: "inventory", Op: op}, {Node: "payment", Op: op}, {Node: "order", Op: op}}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i += batch {
				for j := i; j < min(i+batch, b.N); j++ {
					if err := bc.c.Propose(ids[j], ops[j]); err != nil {
						b.Fatal(err)
					}
				}
				bc.run()
				bc.tick()
			}
			b.StopTimer()
			// Process CPU time (GC included) is steadier than wall time
			// on a shared machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			if n := bc.c.Inflight(); n != 0 {
				b.Fatalf("%d transactions unfinished", n)
			}
		})
	}
}

// BenchmarkRecordCodec encodes and decodes a PREPARED record carrying a
// purchase-sized operation.
func BenchmarkRecordCodec(b *testing.B) {
	r := Record{Type: RecPrepared, Tx: "b17-123456", Epoch: 3, Op: make([]byte, 64), Force: true}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRecord(buf[:0], &r)
		if _, err := DecodeRecord(r.Type, buf); err != nil {
			b.Fatal(err)
		}
	}
}
