package services_test

import (
	"flag"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// The sizes of BenchmarkParticipantReplay's data directory. After ten
// million purchases through `dtx run` (about 20,000 a second, a
// one-minute dedup window) a service's newest snapshot held 2.14 million
// finished branches and its log tail, at most one snapshot interval (64
// MiB: about 600,000 purchases, 1.2 million records), 448,000 purchases
// (896,000 records).
var (
	replayFinished = flag.Int("replay.finished", 200_000, "BenchmarkParticipantReplay: purchases finished before the snapshot")
	replayTail     = flag.Int("replay.tail", 200_000, "BenchmarkParticipantReplay: purchases in the log after the snapshot")
)

// replayWorld is a world of 1,000 items and 1,000 buyers with stock and
// money for any benchmark.
func replayWorld() purchase.World {
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	for i := range 1000 {
		w.Items["item-"+strconv.Itoa(i)] = purchase.Item{Stock: purchase.MaxStock}
		w.Accounts["user-"+strconv.Itoa(i)] = purchase.Account{Balance: purchase.MaxBalance}
	}
	return w
}

var replayToday = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func replayConfig(id string) twopc.ParticipantConfig {
	cfg := twopc.DefaultParticipantConfig(id)
	cfg.Retention = 240_000 // deploy: twice a one-minute window, in 1 ms ticks
	return cfg
}

// replayOp is the operation of purchase i, as the coordinator sends it to
// every service (purchase.Request.MarshalBinary).
func replayOp(tb testing.TB, i int) (string, []byte) {
	tx := "t" + strconv.Itoa(i+1)
	price := money.Cents(100 + i%9000)
	item := "item-" + strconv.Itoa(i%1000)
	r := purchase.Request{
		TxID: tx, UserID: "user-" + strconv.Itoa((i*7)%1000),
		Items:  []purchase.LineItem{{ItemID: item, Quantity: 1, Price: price}},
		ItemID: item, Quantity: 1, Price: price, Amount: price,
		Card: purchase.Card{Last4: "2281", ExpMonth: 8, ExpYear: 2032},
	}
	op, err := r.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return tx, op
}

// buildReplayDir writes service svc's data directory: finished purchases
// (half of them before a rotation of the finished-branch generations), a
// snapshot, then tail purchases in the log after it (PREPARED and
// COMMITTED each, 32 in flight at a time as under load), the way the
// service's driver writes them. An older snapshot, tail purchases before
// the newest, is kept and the log compacted up to it.
func buildReplayDir(tb testing.TB, svc services.Service, finished, tail int) string {
	dir := tb.TempDir()
	fsys := wal.OSFS()
	res := svc.New(replayWorld(), replayToday)
	m, err := twopc.NewParticipant(replayConfig(svc.ID), res)
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := participant.LoadSnapshot(fsys, dir, m, res); err != nil {
		tb.Fatal(err)
	}
	log, err := node.Recover(wal.Config{Dir: dir}, m, node.Hooks{})
	if err != nil {
		tb.Fatal(err)
	}
	var buf []byte
	carry := func() {
		rd := m.Ready()
		for i := range rd.Records {
			buf = twopc.AppendRecord(buf[:0], &rd.Records[i])
			if _, err := log.AppendNoSync(wal.Entry{Type: uint8(rd.Records[i].Type), Data: buf}); err != nil {
				tb.Fatal(err)
			}
		}
		m.Advance()
	}
	carry()
	const inflight = 32
	total := finished + tail
	for i := 0; i < total+inflight; i++ {
		if i < total {
			tx, op := replayOp(tb, i)
			m.Step(twopc.Message{Type: twopc.MsgPrepare, From: twopc.CoordinatorID, To: svc.ID, Tx: tx, Epoch: 1, Op: op, TS: uint64(i + 1), Attempt: 1})
			carry()
		}
		if j := i - inflight; j >= 0 {
			m.Step(twopc.Message{Type: twopc.MsgCommit, From: twopc.CoordinatorID, To: svc.ID, Tx: "t" + strconv.Itoa(j+1), Epoch: 1, Attempt: 1})
			carry()
		}
		if i == finished/2 {
			// A rotation halfway: the snapshot holds both generations of
			// finished branches, as a long-running service's does.
			for range replayConfig(svc.ID).Retention {
				m.Tick()
			}
			carry()
		}
		// Two snapshots, a tail's worth apart: the older one kept, the log
		// compacted up to it (whole segments), as a running service's.
		if i == finished-1 || finished == 0 && i == 0 || i == finished-tail-1 {
			seq, enc, err := participant.TakeSnapshot(m, res, log)
			if err != nil {
				tb.Fatal(err)
			}
			data, err := enc()
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := participant.WriteSnapshot(fsys, dir, log, seq, data, participant.SnapshotHooks{}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if m.InDoubt() != 0 {
		tb.Fatalf("%d branches in doubt", m.InDoubt())
	}
	if err := log.Close(); err != nil {
		tb.Fatal(err)
	}
	closeLedger(res)
	return dir
}

func closeLedger(res twopc.Resource) {
	if c, ok := res.(interface{ CloseLedger() error }); ok {
		c.CloseLedger()
	}
}

// restartService does what participant.Service does at a start: load the
// newest snapshot, then replay the log after it. It returns the machine,
// the Resource and how long each part took.
func restartService(tb testing.TB, svc services.Service, dir string) (*twopc.Participant, twopc.Resource, time.Duration, time.Duration) {
	m, res, l, r, _, _ := restartServiceCPU(tb, svc, dir)
	return m, res, l, r
}

// cpuTime is the process's CPU time (user and system), steadier than the
// wall clock on a machine shared with other work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// restartServiceCPU is restartService that also returns the CPU time of
// each part (the process's: the collector's work included).
func restartServiceCPU(tb testing.TB, svc services.Service, dir string) (*twopc.Participant, twopc.Resource, time.Duration, time.Duration, time.Duration, time.Duration) {
	c0 := cpuTime()
	t0 := time.Now()
	res := svc.New(replayWorld(), replayToday)
	m, err := twopc.NewParticipant(replayConfig(svc.ID), res)
	if err != nil {
		tb.Fatal(err)
	}
	seq, _, err := participant.LoadSnapshot(wal.OSFS(), dir, m, res)
	if err != nil {
		tb.Fatal(err)
	}
	t1, c1 := time.Now(), cpuTime()
	log, err := node.RecoverAfter(wal.Config{Dir: dir}, m, node.Hooks{}, seq)
	if err != nil {
		tb.Fatal(err)
	}
	t2, c2 := time.Now(), cpuTime()
	if err := log.Close(); err != nil {
		tb.Fatal(err)
	}
	return m, res, t1.Sub(t0), t2.Sub(t1), c1 - c0, c2 - c1
}

// BenchmarkParticipantReplay measures a service's restart from a data
// directory with a snapshot of -replay.finished finished branches and a
// log tail of -replay.tail purchases after it: the snapshot's load
// (load-ms) and the tail's replay (replay-ms), as participant.Service
// does them (LoadSnapshot, node.RecoverAfter), on the real file system
// (page cache warm), in wall time and in the process's CPU time. For a
// directory like the one ten million purchases leave: -replay.finished
// 2100000 -replay.tail 450000.
func BenchmarkParticipantReplay(b *testing.B) {
	for _, svc := range services.Builtin() {
		b.Run(svc.ID, func(b *testing.B) {
			dir := buildReplayDir(b, svc, *replayFinished, *replayTail)
			var load, replay, loadCPU, replayCPU time.Duration
			minLoad, minReplay := time.Duration(1<<62), time.Duration(1<<62)
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				_, res, l, r, lc, rc := restartServiceCPU(b, svc, dir)
				closeLedger(res)
				load += l
				replay += r
				loadCPU += lc
				replayCPU += rc
				minLoad, minReplay = min(minLoad, l), min(minReplay, r)
				n++
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
			b.ReportMetric(ms(load), "load-ms")
			b.ReportMetric(ms(replay), "replay-ms")
			b.ReportMetric(ms(loadCPU), "load-cpu-ms")
			b.ReportMetric(ms(replayCPU), "replay-cpu-ms")
			// The fastest restart: on a shared machine, the least disturbed.
			b.ReportMetric(float64(minLoad.Microseconds())/1000, "load-min-ms")
			b.ReportMetric(float64(minReplay.Microseconds())/1000, "replay-min-ms")
		})
	}
}

// TestParticipantReplayDir checks the benchmark's directory: a restart
// finds every purchase committed and nothing in doubt.
func TestParticipantReplayDir(t *testing.T) {
	for _, svc := range services.Builtin() {
		t.Run(svc.ID, func(t *testing.T) {
			dir := buildReplayDir(t, svc, 300, 500)
			m, res, _, _ := restartService(t, svc, dir)
			defer closeLedger(res)
			if n, _ := m.FinishedStats(); n != 800 {
				t.Fatalf("%d finished branches, want 800", n)
			}
			if m.InDoubt() != 0 {
				t.Fatalf("%d in doubt", m.InDoubt())
			}
			for _, i := range []int{0, 299, 300, 799} {
				if st, ok := m.Branch("t" + strconv.Itoa(i+1)); !ok || st != twopc.BranchCommitted {
					t.Fatalf("t%d: %v %v", i+1, st, ok)
				}
			}
			if err := svc.Check(res); err != nil {
				t.Fatal(err)
			}
		})
	}
}
