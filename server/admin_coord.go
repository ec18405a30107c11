package server

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/lockmgr"
	"github.com/dtx-dev/dtx/twopc"
	"google.golang.org/grpc"
)

// The coordinator's admin actions (see admin.go).

// AdminTxNode is one participant of a transaction in flight.
type AdminTxNode struct {
	Node  string `json:"node"`
	Vote  string `json:"vote,omitempty"` // YES, NO, READ_ONLY; empty: not yet
	Acked bool   `json:"acked,omitempty"`
}

// AdminTx is a transaction in flight at the coordinator.
type AdminTx struct {
	ID      string        `json:"id"`
	Phase   string        `json:"phase"` // COLLECTING (votes) or COMMITTING (ACKs)
	Attempt uint32        `json:"attempt"`
	AgeMS   int64         `json:"age_ms"` // of the current attempt (since the restart, if recovered)
	Resends int           `json:"resends,omitempty"`
	Nodes   []AdminTxNode `json:"nodes"`
	Waiting []string      `json:"waiting"`  // whose vote or ACK it waits for
	InDoubt []string      `json:"in_doubt"` // YES voters that do not know the outcome
}

// AdminTransactions is GET /v1/admin/transactions.
type AdminTransactions struct {
	Epoch    uint64 `json:"epoch"`
	InFlight int    `json:"in_flight"`
	// InDoubt counts the transactions in flight with a participant in doubt.
	InDoubt      int       `json:"in_doubt"`
	Transactions []AdminTx `json:"transactions"` // oldest first, at most limit (default 500)
	Truncated    bool      `json:"truncated,omitempty"`
}

// TimelineEntry is one log record of a transaction's timeline.
type TimelineEntry struct {
	Component string `json:"component"`
	Seq       uint64 `json:"seq"`
	Type      string `json:"type"`
	Attempt   uint32 `json:"attempt,omitempty"`
	Text      string `json:"text"`
}

// AdminTimeline is GET /v1/admin/transactions/{id}/timeline: the records
// of every component's log about one transaction, merged.
type AdminTimeline struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"` // the coordinator's: COMMITTED, ROLLED_BACK, PENDING, UNKNOWN
	Entries []TimelineEntry `json:"entries"`
	// Errors names the components whose records could not be read.
	Errors    map[string]string `json:"errors,omitempty"`
	Truncated bool              `json:"truncated,omitempty"`
}

// AdminEdge is one edge of the wait-for graph.
type AdminEdge struct {
	Waiter string `json:"waiter"`
	Holder string `json:"holder"`
	Node   string `json:"node"`
	AgeMS  int64  `json:"age_ms"`
}

// AdminWaits is GET /v1/admin/waits.
type AdminWaits struct {
	Policy string      `json:"policy"`
	Edges  []AdminEdge `json:"edges"`
	Cycles [][]string  `json:"cycles"` // each with its first transaction repeated at the end
}

// AdminRetry is POST /v1/admin/transactions/{id}/retry.
type AdminRetry struct {
	ID   string   `json:"id"`
	Sent []string `json:"sent"` // the participants PREPARE or COMMIT was resent to
}

// Latency summarizes a latency histogram (milliseconds, interpolated
// within the histogram's buckets).
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
}

// AdminOverview is GET /v1/admin/overview: the console's live numbers,
// from the coordinator's metrics and status.
type AdminOverview struct {
	Epoch        uint64   `json:"epoch"`
	InFlight     int      `json:"in_flight"`
	Draining     bool     `json:"draining"`
	Participants []string `json:"participants"`
	Committed    uint64   `json:"committed"`
	RolledBack   uint64   `json:"rolled_back"`
	// Reasons counts rollbacks by reason class (dtx_transactions_total).
	Reasons map[string]uint64 `json:"reasons"`
	// Latency: prepare (BEGIN to decision), commit (COMMIT to the last
	// ACK), submit (client call to durable outcome).
	Latency  map[string]Latency `json:"latency"`
	Restarts uint64             `json:"deadlock_restarts"`
	Retries  uint64             `json:"commit_retries"`
	// HeuristicMismatches counts ACKs that reported a heuristic mismatch.
	HeuristicMismatches uint64 `json:"heuristic_mismatches"`
	UnixMS              int64  `json:"unix_ms"`
}

// coordAdmin is the coordinator's admin state.
type coordAdmin struct {
	mismatches atomic.Uint64 // heuristic mismatches reported by ACKs
}

// startAdmin registers the coordinator's admin actions and the console.
func (c *Coordinator) startAdmin() {
	c.adminAct("overview", "GET /v1/admin/overview", c.adminOverview, nil)
	c.adminAct("transactions", "GET /v1/admin/transactions", c.adminTransactions, txFromPath)
	c.adminAct("timeline", "GET /v1/admin/transactions/{id}/timeline", c.adminTimeline, txFromPath)
	c.adminAct("retry", "POST /v1/admin/transactions/{id}/retry", c.adminRetry, txFromPath)
	c.adminAct("waits", "GET /v1/admin/waits", c.adminWaits, nil)
	c.reg.MustRegister(newCounterFunc("dtx_heuristic_mismatch_total",
		"Heuristic mismatches: at the coordinator, ACKs of branches an operator had decided the other way.",
		func() float64 { return float64(c.adm.mismatches.Load()) }))
	mountConsole(c.mux)
}

// onRecord feeds the metrics and notes the heuristic mismatches that
// ACKs report (loop goroutine).
func (c *Coordinator) onRecord(r *twopc.Record) {
	c.metrics.onRecord(r)
	if r.Type == twopc.RecEvent && strings.Contains(r.Reason, ": "+twopc.HeuristicMismatchPrefix) {
		c.adm.mismatches.Add(1)
		c.log.Error("HEURISTIC MISMATCH reported by a participant: a branch was decided by hand against the coordinator's COMMIT", "tx", r.Tx, "report", r.Reason)
	}
}

func (c *Coordinator) ms(ticks uint64) int64 {
	return (time.Duration(ticks) * c.cfg.Protocol.Tick).Milliseconds()
}

func (c *Coordinator) adminTransactions(ctx context.Context, r adminReq) (any, error) {
	limit := r.Limit
	if limit <= 0 {
		limit = 500
	}
	txs, n, inDoubt, err := c.coord.Transactions(ctx, limit)
	if err != nil {
		return nil, err
	}
	st, err := c.coord.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := AdminTransactions{Epoch: st.Epoch, InFlight: n, InDoubt: inDoubt, Truncated: n > len(txs), Transactions: []AdminTx{}}
	for _, t := range txs {
		a := AdminTx{ID: t.Tx, Phase: t.State.String(), Attempt: t.Attempt, AgeMS: c.ms(t.Ticks), Resends: t.Resends,
			Waiting: nonNil(t.Waiting), InDoubt: nonNil(t.InDoubt)}
		for _, n := range t.Nodes {
			v := ""
			if n.Vote != 0 {
				v = n.Vote.String()
			}
			a.Nodes = append(a.Nodes, AdminTxNode{Node: n.Node, Vote: v, Acked: n.Acked})
		}
		out.Transactions = append(out.Transactions, a)
	}
	return out, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (c *Coordinator) adminRetry(ctx context.Context, r adminReq) (any, error) {
	if err := checkTx(r.Tx); err != nil {
		return nil, err
	}
	sent, err := c.coord.Retry(ctx, r.Tx)
	if err != nil {
		if isLoopErr(err) {
			return nil, err
		}
		return nil, &adminError{code: http.StatusConflict, msg: err.Error()}
	}
	c.log.Info("admin: resent now", "tx", r.Tx, "to", sent)
	return AdminRetry{ID: r.Tx, Sent: nonNil(sent)}, nil
}

// isLoopErr reports an error of the coordinator's loop (stopped, timed
// out), not of the request.
func isLoopErr(err error) bool {
	return errors.Is(err, coordinator.ErrClosed) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (c *Coordinator) adminWaits(ctx context.Context, _ adminReq) (any, error) {
	g, err := c.coord.WaitGraph(ctx)
	if err != nil {
		return nil, err
	}
	out := AdminWaits{Policy: c.cfg.Protocol.Deadlock.String(), Edges: []AdminEdge{}, Cycles: [][]string{}}
	edges := make([]lockmgr.Edge, 0, len(g))
	for _, e := range g {
		out.Edges = append(out.Edges, AdminEdge{Waiter: e.Waiter, Holder: e.Holder, Node: e.Node, AgeMS: c.ms(e.Ticks)})
		edges = append(edges, lockmgr.Edge{Waiter: e.Waiter, Holder: e.Holder, Key: e.Node})
	}
	if cs := lockmgr.FindCycles(edges); cs != nil {
		out.Cycles = cs
	}
	return out, nil
}

// timelineRank orders the records of one transaction across logs, which
// share no clock: by attempt, then by the protocol step a record type
// belongs to. Each log's own order is kept.
var timelineRank = map[string]int{
	"BEGIN": 0, "PREPARED": 1, "VOTED_NO": 1, "VOTED": 2, "RESTART": 3, "COMMIT": 3, "ABORT": 3,
	"COMMITTED": 4, "ABORTED": 4, "HEURISTIC_COMMITTED": 4, "HEURISTIC_ABORTED": 4,
	"HEURISTIC_MISMATCH": 5, "ACKED": 5, "END": 6,
}

// mergeTimeline merges per-component record lists (each in its log's
// order; the coordinator's first): at each step it takes, among the
// lists' next records, the one of the earliest (attempt, step), an EVENT
// counting as its list's previous record.
func mergeTimeline(lists [][]TimelineEntry) []TimelineEntry {
	type key struct{ attempt, rank int }
	heads := make([]int, len(lists))
	last := make([]key, len(lists))
	keyOf := func(i int) key {
		e := lists[i][heads[i]]
		r, ok := timelineRank[e.Type]
		if !ok {
			return last[i]
		}
		return key{int(max(e.Attempt, 1)), r}
	}
	var out []TimelineEntry
	for {
		best := -1
		var bk key
		for i := range lists {
			if heads[i] >= len(lists[i]) {
				continue
			}
			k := keyOf(i)
			if best < 0 || k.attempt < bk.attempt || k.attempt == bk.attempt && k.rank < bk.rank {
				best, bk = i, k
			}
		}
		if best < 0 {
			return out
		}
		out = append(out, lists[best][heads[best]])
		last[best] = bk
		heads[best]++
	}
}

func (c *Coordinator) adminTimeline(ctx context.Context, r adminReq) (any, error) {
	if err := checkTx(r.Tx); err != nil {
		return nil, err
	}
	limit := r.Limit
	if limit <= 0 || limit > maxRecords {
		limit = maxRecords
	}
	out := AdminTimeline{ID: r.Tx, Status: "UNKNOWN", Errors: map[string]string{}}
	peers := make([]string, 0, len(c.cfg.Peers))
	for p := range c.cfg.Peers {
		if p != c.cfg.ID {
			peers = append(peers, p)
		}
	}
	slices.Sort(peers)
	lists := make([][]TimelineEntry, 1+len(peers))
	errs := make([]string, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := c.net.Client(p)
			if err != nil {
				errs[i] = err.Error()
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			// WaitForReady: a peer that just came back may still be in the
			// connection's reconnect backoff; wait for it within the deadline.
			rep, err := cl.Records(cctx, &dtxv1.RecordsRequest{TransactionId: r.Tx, Limit: uint32(limit)}, grpc.WaitForReady(true))
			if err != nil {
				errs[i] = err.Error()
				return
			}
			for _, rec := range rep.GetRecords() {
				lists[1+i] = append(lists[1+i], TimelineEntry{Component: p, Seq: rec.GetSeq(), Type: rec.GetType(), Attempt: rec.GetAttempt(), Text: rec.GetText()})
			}
			if rep.GetTruncated() {
				errs[i] = "truncated"
			}
		}()
	}
	err := c.coord.Records(r.Tx, func(seq uint64, rec twopc.Record) {
		if len(lists[0]) >= limit {
			out.Truncated = true
			return
		}
		lists[0] = append(lists[0], TimelineEntry{Component: c.cfg.ID, Seq: seq, Type: rec.Type.String(), Attempt: rec.Attempt, Text: rec.String()})
	})
	if err != nil {
		out.Errors[c.cfg.ID] = err.Error()
	}
	wg.Wait()
	for i, e := range errs {
		switch e {
		case "":
		case "truncated":
			out.Truncated = true
		default:
			out.Errors[peers[i]] = e
		}
	}
	known, o, err := c.coord.Lookup(ctx, r.Tx)
	switch {
	case err != nil:
		out.Errors[c.cfg.ID+" (status)"] = err.Error()
	case known == coordinator.KnownPending:
		out.Status = "PENDING"
	case known == coordinator.KnownDecided:
		s, _ := statusOf(o)
		out.Status = statusName(s)
	}
	out.Entries = nonNilEntries(mergeTimeline(lists))
	return out, nil
}

func nonNilEntries(s []TimelineEntry) []TimelineEntry {
	if s == nil {
		return []TimelineEntry{}
	}
	return s
}

func (c *Coordinator) adminOverview(ctx context.Context, _ adminReq) (any, error) {
	st, err := c.coord.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := AdminOverview{Epoch: st.Epoch, InFlight: st.Inflight, Draining: c.draining.Load(), Participants: c.cfg.Participants,
		Reasons: map[string]uint64{}, Latency: map[string]Latency{}, HeuristicMismatches: c.adm.mismatches.Load(),
		UnixMS: time.Now().UnixMilli()}
	mfs, err := c.reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "dtx_transactions_total":
			for _, m := range mf.GetMetric() {
				n := uint64(m.GetCounter().GetValue())
				if label(m, "outcome") == "committed" {
					out.Committed += n
				} else {
					out.RolledBack += n
					out.Reasons[label(m, "reason")] += n
				}
			}
		case "dtx_phase_seconds":
			for _, m := range mf.GetMetric() {
				out.Latency[label(m, "phase")] = summarize(m.GetHistogram())
			}
		case "dtx_submit_seconds":
			for _, m := range mf.GetMetric() {
				out.Latency["submit"] = summarize(m.GetHistogram())
			}
		case "dtx_deadlock_restarts_total":
			out.Restarts = uint64(mf.GetMetric()[0].GetCounter().GetValue())
		case "dtx_commit_retries_total":
			out.Retries = uint64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// summarize reads p50, p90 and p99 from a histogram, interpolating
// linearly within the bucket a quantile falls in (as Prometheus's
// histogram_quantile does); past the last finite bound it reports that
// bound.
func summarize(h *dto.Histogram) Latency {
	out := Latency{Count: h.GetSampleCount()}
	if out.Count == 0 {
		return out
	}
	q := func(p float64) float64 {
		rank := p * float64(out.Count)
		lower, prev := 0.0, uint64(0)
		for _, b := range h.GetBucket() {
			ub, n := b.GetUpperBound(), b.GetCumulativeCount()
			if math.IsInf(ub, 1) {
				break
			}
			if float64(n) >= rank {
				if n == prev {
					return ub * 1000
				}
				return (lower + (ub-lower)*(rank-float64(prev))/float64(n-prev)) * 1000
			}
			lower, prev = ub, n
		}
		return lower * 1000
	}
	out.P50, out.P90, out.P99 = q(.5), q(.9), q(.99)
	return out
}
