package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/twopc"
)

// A participant's admin actions (see admin.go): its branches in doubt,
// and deciding one by hand when its coordinator is gone for good
// (twopc/heuristic.go).

// AdminBranch is a branch in doubt at a participant.
type AdminBranch struct {
	ID        string `json:"id"`
	Attempt   uint32 `json:"attempt"`
	AgeMS     int64  `json:"age_ms"` // prepared for (since the restart, if recovered)
	Inquiries int    `json:"inquiries"`
	Epoch     uint64 `json:"epoch"`
}

// AdminHeuristic is a branch decided by hand.
type AdminHeuristic struct {
	ID      string `json:"id"`
	Attempt uint32 `json:"attempt"`
	Outcome string `json:"outcome"` // HEURISTIC_COMMITTED or HEURISTIC_ABORTED
	Note    string `json:"note,omitempty"`
	// Coordinator is its decision once it arrived (COMMIT, ABORT).
	Coordinator string `json:"coordinator,omitempty"`
	Mismatch    bool   `json:"mismatch"`
}

// AdminInDoubt is GET /v1/admin/in-doubt on a participant.
type AdminInDoubt struct {
	Service    string           `json:"service"`
	InDoubt    []AdminBranch    `json:"in_doubt"`
	Heuristics []AdminHeuristic `json:"heuristics"`
	Mismatches uint64           `json:"heuristic_mismatches"`
}

func toAdminHeuristic(h twopc.Heuristic) AdminHeuristic {
	o := "HEURISTIC_ABORTED"
	if h.Committed {
		o = "HEURISTIC_COMMITTED"
	}
	return AdminHeuristic{ID: h.Tx, Attempt: h.Attempt, Outcome: o, Note: h.Note, Coordinator: h.Coordinator, Mismatch: h.Mismatch}
}

func (p *Participant) startAdmin() {
	p.admin.records = p.svcRef.Records
	p.adminAct("in-doubt", "GET /v1/admin/in-doubt", p.adminInDoubt, nil)
	p.adminAct("force", "POST /v1/admin/transactions/{id}/force", p.adminForce, parseForce)
	stats := func() twopc.HeuristicStats {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var s twopc.HeuristicStats
		p.svcRef.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { s = m.HeuristicStats() })
		return s
	}
	for outcome, f := range map[string]func(twopc.HeuristicStats) uint64{
		"committed": func(s twopc.HeuristicStats) uint64 { return s.Committed },
		"aborted":   func(s twopc.HeuristicStats) uint64 { return s.Aborted },
	} {
		p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dtx_heuristic_branches",
			Help:        "Branches decided by hand (heuristically) at this service, by outcome; kept for good.",
			ConstLabels: prometheus.Labels{"outcome": outcome}}, func() float64 { return float64(f(stats())) }))
	}
	p.reg.MustRegister(newCounterFunc("dtx_heuristic_mismatch_total",
		"Heuristic mismatches: the coordinator decided the other way than a branch decided by hand here.",
		func() float64 { return float64(stats().Mismatches) }))
	go p.watchHeuristics()
}

// watchHeuristics logs every heuristic mismatch as an error, once per
// process (those recovered from the log at the start too), until the
// process drains.
func (p *Participant) watchHeuristics() {
	seen := map[string]bool{}
	for !p.draining.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var hs []twopc.Heuristic
		err := p.svcRef.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) {
			if m.HeuristicStats().Mismatches > uint64(len(seen)) {
				hs = m.Heuristics()
			}
		})
		cancel()
		if err == nil {
			for _, h := range hs {
				if h.Mismatch && !seen[h.Tx] {
					seen[h.Tx] = true
					p.log.Error("HEURISTIC MISMATCH: the coordinator decided the other way than the branch decided by hand; the transaction is not atomic and needs repair by hand",
						"tx", h.Tx, "attempt", h.Attempt, "heuristic_commit", h.Committed, "coordinator", h.Coordinator, "note", h.Note)
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (p *Participant) adminInDoubt(ctx context.Context, _ adminReq) (any, error) {
	out := AdminInDoubt{Service: p.cfg.ID, InDoubt: []AdminBranch{}, Heuristics: []AdminHeuristic{}}
	tick := p.cfg.Protocol.Tick
	err := p.svcRef.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) {
		for _, b := range m.InDoubtBranches() {
			out.InDoubt = append(out.InDoubt, AdminBranch{ID: b.Tx, Attempt: b.Attempt, AgeMS: (time.Duration(b.Ticks) * tick).Milliseconds(), Inquiries: b.Inquiries, Epoch: b.Epoch})
		}
		for _, h := range m.Heuristics() {
			out.Heuristics = append(out.Heuristics, toAdminHeuristic(h))
		}
		out.Mismatches = m.HeuristicStats().Mismatches
	})
	return out, err
}

// forceBody is the body of POST /v1/admin/transactions/{id}/force.
type forceBody struct {
	Outcome string `json:"outcome"` // COMMIT or ABORT
	Note    string `json:"note"`
}

func parseForce(r *http.Request) (adminReq, error) {
	req := adminReq{Tx: r.PathValue("id")}
	var body forceBody
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return req, fmt.Errorf(`body: want {"outcome": "COMMIT" or "ABORT", "note": "why"}: %v`, err)
	}
	req.Outcome, req.Note = body.Outcome, body.Note
	return req, nil
}

func (p *Participant) adminForce(ctx context.Context, r adminReq) (any, error) {
	if err := checkTx(r.Tx); err != nil {
		return nil, err
	}
	var commit bool
	switch strings.ToUpper(r.Outcome) {
	case "COMMIT":
		commit = true
	case "ABORT":
	default:
		return nil, badAdmin("outcome %q: want COMMIT or ABORT", r.Outcome)
	}
	note := r.Note
	if r.Who != "" {
		note = strings.TrimSpace(note + " (by " + r.Who + ")")
	}
	if len(note) > twopc.MaxHeuristicNote {
		return nil, badAdmin("note of %d bytes is over the limit of %d", len(note), twopc.MaxHeuristicNote)
	}
	if err := p.svcRef.ForceOutcome(ctx, r.Tx, commit, note); err != nil {
		return nil, err
	}
	p.log.Warn("HEURISTIC decision by an operator: an in-doubt branch was decided without its coordinator", "tx", r.Tx, "commit", commit, "note", note)
	var h twopc.Heuristic
	err := p.svcRef.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { h, _ = m.HeuristicOf(r.Tx) })
	if err != nil {
		return nil, err
	}
	return toAdminHeuristic(h), nil
}
