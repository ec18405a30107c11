package server

import (
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtx-dev/dtx/transport/grpcnet"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Metrics never carry a per-transaction label: labels are node names,
// outcomes, phases and reason classes, all of them few.

var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10}

// netMetrics are the transport's metrics.
type netMetrics struct {
	calls   *prometheus.CounterVec
	callDur prometheus.Histogram
	batch   prometheus.Histogram
}

func newNetMetrics(reg *prometheus.Registry) *netMetrics {
	m := &netMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_transport_calls_total",
			Help: "Deliver calls made, by destination node and result (ok or error; a failed call's messages are lost and the protocol retries).",
		}, []string{"peer", "result"}),
		callDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dtx_transport_call_seconds", Help: "Duration of Deliver calls.", Buckets: latencyBuckets,
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dtx_transport_batch_messages",
			Help:    "Messages per Deliver call (batching: many transactions share one call).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
	}
	reg.MustRegister(m.calls, m.callDur, m.batch)
	return m
}

func (m *netMetrics) onCall(to string, n int, took time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.calls.WithLabelValues(to, res).Inc()
	m.callDur.Observe(took.Seconds())
	if err == nil {
		m.batch.Observe(float64(n))
	}
}

// watch registers counters read from the network's stats at scrape time.
func (m *netMetrics) watch(reg *prometheus.Registry, n *grpcnet.Network) {
	counter := func(name, help string, f func(grpcnet.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(n.Stats())) }))
	}
	counter("dtx_transport_sent_messages_total", "Messages carried by successful calls.", func(s grpcnet.Stats) uint64 { return s.Sent })
	counter("dtx_transport_dropped_messages_total", "Messages lost at the sender (full queue, unknown node, failed call).", func(s grpcnet.Stats) uint64 { return s.Dropped })
	counter("dtx_transport_received_messages_total", "Messages accepted from peers.", func(s grpcnet.Stats) uint64 { return s.Received })
	counter("dtx_transport_refused_messages_total", "Messages refused (node restarting, inbox full, draining, malformed).", func(s grpcnet.Stats) uint64 { return s.Refused })
	counter("dtx_transport_call_errors_total", "Failed Deliver calls; each is followed by a backoff before the next (retries with backoff).", func(s grpcnet.Stats) uint64 { return s.CallErrors })
}

// walMetrics are a log's metrics: fsync latency (timed under the wal's FS)
// and the group-commit counters.
type walMetrics struct {
	fsync prometheus.Histogram
}

func newWALMetrics(reg *prometheus.Registry, stats func() wal.Stats) *walMetrics {
	m := &walMetrics{fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "dtx_wal_fsync_seconds", Help: "Duration of log fdatasync calls.", Buckets: latencyBuckets,
	})}
	reg.MustRegister(m.fsync)
	counter := func(name, help string, f func(wal.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(stats())) }))
	}
	counter("dtx_wal_records_total", "Records appended to the log.", func(s wal.Stats) uint64 { return s.Entries })
	counter("dtx_wal_group_syncs_total", "Group-commit rounds that synced.", func(s wal.Stats) uint64 { return s.GroupSyncs })
	counter("dtx_wal_synced_records_total", "Records made durable by group-commit syncs; divided by dtx_wal_group_syncs_total it is the group-commit batch size.", func(s wal.Stats) uint64 { return s.SyncedEntries })
	counter("dtx_wal_syncs_total", "fdatasync calls.", func(s wal.Stats) uint64 { return s.Syncs })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dtx_wal_max_records_per_sync", Help: "Most records made durable by one group-commit sync.",
	}, func() float64 { return float64(stats().MaxEntriesPerSync) }))
	return m
}

// fs wraps the OS file system so that every file sync is timed.
func (m *walMetrics) fs() wal.FS { return timedFS{FS: wal.OSFS(), obs: m.fsync} }

type timedFS struct {
	wal.FS
	obs prometheus.Histogram
}

func (t timedFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	f, err := t.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return timedFile{File: f, obs: t.obs}, nil
}

type timedFile struct {
	wal.File
	obs prometheus.Histogram
}

func (f timedFile) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.obs.Observe(time.Since(start).Seconds())
	return err
}

// coordMetrics are the coordinator's transaction metrics, fed from its
// log records (on the loop goroutine) and its client API.
type coordMetrics struct {
	txs      *prometheus.CounterVec
	phase    *prometheus.HistogramVec
	submit   prometheus.Histogram
	retries  prometheus.Counter
	restarts prometheus.Counter
	dups     prometheus.Counter
	nodes    []string

	// Loop goroutine only.
	begun   map[string]time.Time
	decided map[string]time.Time
}

func newCoordMetrics(reg *prometheus.Registry, nodes []string) *coordMetrics {
	m := &coordMetrics{
		txs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_transactions_total",
			Help: "Transactions decided, by outcome (committed, rolled_back) and reason class.",
		}, []string{"outcome", "reason"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dtx_phase_seconds",
			Help:    "Phase latencies at the coordinator: prepare (BEGIN to decision), commit (COMMIT to the last ACK).",
			Buckets: latencyBuckets,
		}, []string{"phase"}),
		submit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dtx_submit_seconds", Help: "Client API submissions, from the call to the durable outcome.", Buckets: latencyBuckets,
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_commit_retries_total", Help: "COMMIT resends to participants that had not acknowledged.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_deadlock_restarts_total", Help: "Deadlock victims restarted as a new attempt (same id and timestamp) instead of rolled back.",
		}),
		dups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_duplicate_submissions_total", Help: "Submissions of a transaction id seen before (answered with the first outcome).",
		}),
		nodes:   nodes,
		begun:   map[string]time.Time{},
		decided: map[string]time.Time{},
	}
	reg.MustRegister(m.txs, m.phase, m.submit, m.retries, m.restarts, m.dups)
	return m
}

// onRecord runs on the coordinator's loop goroutine.
func (m *coordMetrics) onRecord(r *twopc.Record) {
	now := time.Now()
	switch r.Type {
	case twopc.RecBegin:
		m.begun[r.Tx] = now
	case twopc.RecCommit:
		m.txs.WithLabelValues("committed", "").Inc()
		if t, ok := m.begun[r.Tx]; ok {
			m.phase.WithLabelValues("prepare").Observe(now.Sub(t).Seconds())
			delete(m.begun, r.Tx)
		}
		m.decided[r.Tx] = now
	case twopc.RecEnd:
		if t, ok := m.decided[r.Tx]; ok {
			m.phase.WithLabelValues("commit").Observe(now.Sub(t).Seconds())
			delete(m.decided, r.Tx)
		}
	case twopc.RecAbort:
		m.txs.WithLabelValues("rolled_back", reasonClass(r.Reason, m.nodes)).Inc()
		if t, ok := m.begun[r.Tx]; ok {
			m.phase.WithLabelValues("prepare").Observe(now.Sub(t).Seconds())
			delete(m.begun, r.Tx)
		}
	case twopc.RecRestart:
		m.restarts.Inc()
	case twopc.RecEvent:
		if strings.HasPrefix(r.Reason, "commit retry") {
			m.retries.Inc()
		}
	}
}

// reasonClass maps a rollback reason to one of few classes.
func reasonClass(reason string, nodes []string) string {
	switch {
	case strings.HasPrefix(reason, "prepare timeout"):
		return "prepare_timeout"
	case strings.HasPrefix(reason, "coordinator restarted"):
		return "coordinator_restart"
	case strings.HasPrefix(reason, "deadlock"):
		return "deadlock"
	}
	svc, rest, ok := strings.Cut(reason, ": ")
	if !ok || !slices.Contains(nodes, svc) {
		return "other"
	}
	switch {
	case strings.Contains(rest, "lock timeout"):
		return svc + "_lock_timeout"
	case strings.Contains(rest, "deadlock"):
		return svc + "_deadlock"
	}
	return svc + "_voted_no"
}

func newGaugeFunc(name, help string, f func() float64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
}

// snapshotMetrics registers a component's snapshot counters: how many it
// wrote, the size of the last, the longest pause of its loop for one.
// snapStats is what snapshotMetrics exports of a process's snapshots.
type snapStats struct {
	Taken      uint64
	LastBytes  int
	TableBytes int64 // appended to table files by the last snapshot
	MaxPause   time.Duration
	// LoadTook and ReplayTook: the start's load of its snapshot and
	// replay of the log after it.
	LoadTook, ReplayTook time.Duration
}

func snapshotMetrics(reg *prometheus.Registry, stats func() snapStats) {
	reg.MustRegister(newCounterFunc("dtx_snapshots_total",
		"Snapshots this process wrote (each followed by a compaction of its log).",
		func() float64 { return float64(stats().Taken) }))
	reg.MustRegister(newGaugeFunc("dtx_snapshot_last_bytes", "Size of the last snapshot written (its file; the outcome tables are in table files).",
		func() float64 { return float64(stats().LastBytes) }))
	reg.MustRegister(newGaugeFunc("dtx_snapshot_last_table_bytes",
		"What the last snapshot appended to its table files: what changed of the outcome tables since the one before.",
		func() float64 { return float64(stats().TableBytes) }))
	reg.MustRegister(newGaugeFunc("dtx_snapshot_loop_pause_max_seconds",
		"Longest time the node loop stopped to capture a snapshot (the rest is off the loop).",
		func() float64 { return stats().MaxPause.Seconds() }))
	reg.MustRegister(newGaugeFunc("dtx_start_snapshot_load_seconds",
		"How long this process's start took to load its snapshot (the retained outcomes, mostly).",
		func() float64 { return stats().LoadTook.Seconds() }))
	reg.MustRegister(newGaugeFunc("dtx_start_replay_seconds",
		"How long this process's start took to replay its log after the snapshot.",
		func() float64 { return stats().ReplayTook.Seconds() }))
}
