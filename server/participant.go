package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/deploy"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/tracing"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Service is the business side of a participant process: what a user's
// own service provides to join transactions.
type Service struct {
	// NewResource returns the service's state as it was before its log's
	// first record; the log is replayed into it at every start.
	NewResource func() (participant.Resource, error)
	// State, if set, returns the resource's state as a JSON-able value,
	// served at GET /v1/state. Called on the service's loop goroutine.
	State func(participant.Resource) any
	// Check, if set, verifies the resource's invariants (GET /v1/state
	// reports its error). Called on the loop goroutine.
	Check func(participant.Resource) error
}

// ParticipantConfig configures a participant process.
type ParticipantConfig struct {
	Common
	// Service is the business side. OpenService, if set, is called instead
	// once the data directory is locked, to build it from the directory
	// (the built-in services read their world.json there).
	Service     Service
	OpenService func(dataDir string) (Service, error)
	// Protocol holds the protocol settings: Tick, PrepareTimeout (the
	// coordinator's, to pace in-doubt inquiries), LockTimeout, Deadlock,
	// DetectEvery.
	Protocol deploy.Protocol
}

// Participant is a running participant process.
type Participant struct {
	*base
	cfg    ParticipantConfig
	spec   Service
	svcRef *participant.Service
	runErr chan error
}

// StartParticipant opens (recovering) the service's log under
// DataDir/<ID> and starts serving. In-doubt branches ask the coordinator
// for their outcome at once, and keep asking with backoff.
func StartParticipant(cfg ParticipantConfig) (*Participant, error) {
	if cfg.Protocol.Tick == 0 {
		p := deploy.DefaultProtocol()
		p.Deadlock = cfg.Protocol.Deadlock
		cfg.Protocol = p
	}
	if cfg.Protocol.Deadlock == 0 {
		cfg.Protocol.Deadlock = twopc.DeadlockDetect
	}
	if err := cfg.Protocol.Validate(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.ID == twopc.CoordinatorID || cfg.ID == "" {
		return nil, fmt.Errorf("server: bad participant name %q", cfg.ID)
	}
	if _, ok := cfg.Peers[twopc.CoordinatorID]; !ok {
		return nil, errors.New("server: the coordinator's address is required (--peer coordinator=ADDR)")
	}
	b, err := newBase(cfg.Common)
	if err != nil {
		return nil, err
	}
	spec := cfg.Service
	if cfg.OpenService != nil {
		spec, err = cfg.OpenService(cfg.DataDir)
		if err != nil {
			b.closeAll()
			return nil, err
		}
	}
	if spec.NewResource == nil {
		b.closeAll()
		return nil, errors.New("server: Service.NewResource is required")
	}
	p := &Participant{base: b, cfg: cfg, spec: spec, runErr: make(chan error, 1)}
	var svc *participant.Service
	wm := newWALMetrics(b.reg, func() wal.Stats {
		if svc == nil {
			return wal.Stats{}
		}
		return svc.LogStats()
	})
	logCfg := wal.DefaultConfig("")
	logCfg.FS = wm.fs()
	pc := deploy.ServiceConfig(cfg.DataDir, b.cfg.ID, cfg.Protocol, b.net, logCfg, spec.NewResource)
	pc.Snapshot = participant.SnapshotConfig{Every: cfg.Protocol.SnapshotEvery, LogBytes: cfg.Protocol.SnapshotLogBytes}
	pc.Logger = b.log
	if b.tracing != nil {
		pc.Tracer = tracing.NewParticipant(b.tracing, b.cfg.ID)
	}
	svc, err = participant.Open(pc)
	if err != nil {
		b.closeAll()
		return nil, err
	}
	p.svcRef = svc
	var inDoubt []string
	svc.InspectStopped(func(m *twopc.Participant, _ participant.Resource) { inDoubt = m.InDoubtTxs() })
	for _, tx := range inDoubt {
		b.log.Info("in doubt after restart; asking the coordinator", "tx", tx)
	}
	b.log.Info("service recovered", "in_doubt", len(inDoubt))
	b.reg.MustRegister(newGaugeFunc("dtx_in_doubt_branches", "Prepared branches without a decision (in doubt) at this service.", func() float64 {
		n, err := p.inDoubt(context.Background())
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	snapshotMetrics(b.reg, func() snapStats {
		st := svc.SnapshotStats()
		return snapStats{Taken: st.Taken, LastBytes: st.LastBytes, TableBytes: st.LastTableBytes, MaxPause: st.MaxPause,
			LoadTook: st.LoadTook, ReplayTook: st.ReplayTook}
	})
	go func() { p.runErr <- svc.Run(context.Background()) }()
	b.guard.senders[twopc.CoordinatorID] = true
	b.handle("GET /v1/state", auth.ActOperate, p.httpState)
	p.startAdmin()
	b.serve()
	return p, nil
}

// Err yields the service's fatal error (a failed log) if it stops on its own.
func (p *Participant) Err() <-chan error { return p.runErr }

func (p *Participant) inDoubt(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var n int
	err := p.svcRef.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { n = m.InDoubt() })
	return n, err
}

// StateBody is the JSON of GET /v1/state on a participant.
type StateBody struct {
	Service string   `json:"service"`
	InDoubt []string `json:"in_doubt"`
	// Heuristics are the branches decided by hand (admin API), with any
	// mismatch with the coordinator's decision.
	Heuristics []AdminHeuristic `json:"heuristics,omitempty"`
	// Check is the resource's invariant violation, "" if none.
	Check string `json:"check,omitempty"`
	State any    `json:"state,omitempty"`
}

// State returns the service's state (what GET /v1/state serves).
func (p *Participant) State(ctx context.Context) (StateBody, error) {
	body := StateBody{Service: p.cfg.ID, InDoubt: []string{}}
	err := p.svcRef.Inspect(ctx, func(m *twopc.Participant, r participant.Resource) {
		body.InDoubt = append(body.InDoubt, m.InDoubtTxs()...)
		for _, h := range m.Heuristics() {
			body.Heuristics = append(body.Heuristics, toAdminHeuristic(h))
		}
		if p.spec.State != nil {
			body.State = p.spec.State(r)
		}
		if p.spec.Check != nil {
			if err := p.spec.Check(r); err != nil {
				body.Check = err.Error()
			}
		}
	})
	return body, err
}

func (p *Participant) httpState(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	body, err := p.State(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// Shutdown drains the service: new PREPAREs are refused at once (the
// coordinator rolls those transactions back after its prepare timeout);
// branches in doubt get up to Grace to learn their decision; then the
// servers stop and the log is closed (synced). Branches still in doubt
// are recovered at the next start.
func (p *Participant) Shutdown(ctx context.Context) error {
	p.startDrain()
	p.net.SetFilter(func(m *twopc.Message) bool { return m.Type != twopc.MsgPrepare })
	grace := p.cfg.Grace
	if d, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(d))
	}
	deadline := time.Now().Add(grace)
	quiet := waitUntil(grace, func() bool {
		n, err := p.inDoubt(context.Background())
		return err != nil || n == 0
	})
	if !quiet {
		p.log.Warn("shutdown: branches still in doubt are left to recovery")
	}
	p.stopServers(max(time.Until(deadline), time.Second))
	err := p.svcRef.Close()
	p.closeAll()
	p.log.Info("service stopped", "err", err)
	return err
}
