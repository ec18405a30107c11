package twopc

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dtx-dev/dtx/lockmgr"
)

// CoordState is the state of a transaction at the coordinator. The zero
// value is invalid.
type CoordState uint8

const (
	// CoordCollecting: PREPARE was sent; votes are being collected. No
	// decision exists; an inquiry is answered with nothing ("pending").
	CoordCollecting CoordState = 1 + iota
	// CoordCommitting: COMMIT is logged (final). COMMIT is resent with
	// backoff to every participant that has not ACKed, across restarts.
	CoordCommitting
	// CoordCommitted: every ACK arrived and END was written.
	CoordCommitted
	// CoordAborted: ABORT was decided and sent. Aborts need no ACKs.
	CoordAborted
)

func (s CoordState) String() string {
	switch s {
	case CoordCollecting:
		return "COLLECTING"
	case CoordCommitting:
		return "COMMITTING"
	case CoordCommitted:
		return "COMMITTED"
	case CoordAborted:
		return "ABORTED"
	}
	return fmt.Sprintf("CoordState(%d)", uint8(s))
}

// CoordinatorConfig configures a Coordinator. Times are in ticks.
type CoordinatorConfig struct {
	// ID is the coordinator's node name (default CoordinatorID).
	ID string
	// PrepareTimeout: a transaction without every vote after this many
	// ticks is aborted.
	PrepareTimeout uint64
	// RetryBase and RetryMax bound the backoff between COMMIT resends.
	RetryBase, RetryMax uint64
	// MaxInflight bounds transactions that are not yet finished (collecting
	// or committing); Propose returns ErrBusy beyond it. 0 means no bound.
	MaxInflight int
	// Rand returns random numbers for retry jitter; nil means no jitter.
	// Inject a seeded source to keep runs deterministic.
	Rand func() uint64
	// WaitsTTL: a participant's wait-for report older than this many ticks
	// is ignored by deadlock detection (participants report every few
	// ticks while they have waiters). 0 means 50.
	WaitsTTL uint64
}

// DefaultCoordinatorConfig returns a config for 1 ms ticks.
func DefaultCoordinatorConfig() CoordinatorConfig {
	return CoordinatorConfig{
		ID:             CoordinatorID,
		PrepareTimeout: 1000,
		RetryBase:      50,
		RetryMax:       2000,
		MaxInflight:    1 << 16,
	}
}

// Validate reports a config that cannot work.
func (c CoordinatorConfig) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("twopc: coordinator ID is empty")
	case c.PrepareTimeout == 0:
		return fmt.Errorf("twopc: PrepareTimeout must be > 0 ticks")
	case c.RetryBase == 0 || c.RetryMax < c.RetryBase:
		return fmt.Errorf("twopc: need 0 < RetryBase <= RetryMax (got %d, %d)", c.RetryBase, c.RetryMax)
	case c.MaxInflight < 0:
		return fmt.Errorf("twopc: MaxInflight must be >= 0")
	}
	return nil
}

// Branch is one participant's part of a transaction.
type Branch struct {
	Node string
	Op   []byte
}

// coordTx is a transaction the coordinator is working on.
type coordTx struct {
	id       string
	state    CoordState
	nodes    []string // participants, in proposal order
	votes    []Vote   // per node; 0 = not yet voted
	acked    []bool   // per node, commit phase
	dups     int      // duplicate submissions waiting for the outcome
	gen      uint32   // bumps invalidate older timers
	attempts int      // commit resends so far
	ts       uint64   // timestamp: smaller is older (not logged)
	ops      [][]byte // per node, while collecting: to resend PREPARE (not logged)
}

func (t *coordTx) index(node string) int {
	return slices.Index(t.nodes, node)
}

// finished is what the coordinator remembers of a finished transaction.
type finished struct {
	committed bool
	reason    string
}

// Coordinator is the coordinator's state machine for many concurrent
// transactions. It is not safe for concurrent use: one driver goroutine
// owns it.
type Coordinator struct {
	cfg     CoordinatorConfig
	epoch   uint64
	started bool
	now     uint64
	active  map[string]*coordTx // collecting or committing
	done    map[string]finished // committed (END) or aborted
	timers  timers
	rd      Ready
	lastTS  uint64
	waits   map[string]waitReport // latest wait-for report per participant
	dl      DeadlockStats
}

// waitReport is a participant's latest wait-for edges.
type waitReport struct {
	at    uint64
	waits []Wait
}

// DeadlockStats counts what deadlock handling did at the coordinator.
type DeadlockStats struct {
	// Cycles is the number of global cycles broken (one victim each).
	Cycles uint64
	// Wounds is the number of transactions aborted on a wound request.
	Wounds uint64
	// DetectTicks holds, for the first cycles broken (at most 4096), how
	// many ticks the youngest edge of the cycle had existed when the
	// victim was aborted: the time from cycle formed to victim aborted.
	DetectTicks []uint64
}

// DeadlockStats returns a copy of the deadlock counters.
func (c *Coordinator) DeadlockStats() DeadlockStats {
	s := c.dl
	s.DetectTicks = slices.Clone(s.DetectTicks)
	return s
}

// NewCoordinator returns a coordinator with no history. Replay the log into
// it with Restore, then call Start.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.WaitsTTL == 0 {
		cfg.WaitsTTL = 50
	}
	return &Coordinator{
		cfg:    cfg,
		active: make(map[string]*coordTx),
		done:   make(map[string]finished),
		waits:  make(map[string]waitReport),
	}, nil
}

// Epoch returns the current epoch (0 before Start).
func (c *Coordinator) Epoch() uint64 { return c.epoch }

// Now returns the tick count.
func (c *Coordinator) Now() uint64 { return c.now }

// Inflight returns the number of unfinished transactions.
func (c *Coordinator) Inflight() int { return len(c.active) }

// State returns the state of tx and whether the coordinator knows it.
func (c *Coordinator) State(tx string) (CoordState, bool) {
	if t, ok := c.active[tx]; ok {
		return t.state, true
	}
	if f, ok := c.done[tx]; ok {
		if f.committed {
			return CoordCommitted, true
		}
		return CoordAborted, true
	}
	return 0, false
}

// Restore applies one replayed log record. It must be called, in log order,
// before Start.
func (c *Coordinator) Restore(r Record) error {
	if c.started {
		return ErrStarted
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s", ErrBadRecord, r, why)
	}
	switch r.Type {
	case RecEpoch:
		if r.Epoch <= c.epoch {
			return bad(fmt.Sprintf("epoch does not increase (had %d)", c.epoch))
		}
		c.epoch = r.Epoch
	case RecBegin:
		if _, ok := c.active[r.Tx]; ok {
			return bad("transaction begun twice")
		}
		if _, ok := c.done[r.Tx]; ok {
			return bad("transaction begun after it finished")
		}
		c.active[r.Tx] = newCoordTx(r.Tx, r.Nodes)
	case RecVoted:
		if t := c.active[r.Tx]; t != nil && t.state == CoordCollecting {
			if i := t.index(r.Node); i >= 0 {
				t.votes[i] = r.Vote
			}
		}
	case RecCommit:
		t := c.active[r.Tx]
		if t == nil {
			if _, ok := c.done[r.Tx]; ok {
				return bad("COMMIT after the transaction finished")
			}
			t = newCoordTx(r.Tx, r.Nodes) // BEGIN compacted away
			c.active[r.Tx] = t
		}
		if t.state != CoordCollecting {
			return bad("COMMIT for a transaction already " + t.state.String())
		}
		t.state = CoordCommitting
		for i, n := range t.nodes {
			t.acked[i] = !slices.Contains(r.Nodes, n) // read-only voters owe no ACK
		}
	case RecAcked:
		if t := c.active[r.Tx]; t != nil && t.state == CoordCommitting {
			if i := t.index(r.Node); i >= 0 {
				t.acked[i] = true
			}
		}
	case RecEnd:
		t := c.active[r.Tx]
		if t == nil || t.state != CoordCommitting {
			if _, ok := c.done[r.Tx]; ok || t != nil {
				return bad("END for a transaction that is not committing")
			}
		}
		delete(c.active, r.Tx)
		c.done[r.Tx] = finished{committed: true}
	case RecAbort:
		if t := c.active[r.Tx]; t != nil && t.state == CoordCommitting {
			return bad("ABORT after COMMIT")
		}
		if f, ok := c.done[r.Tx]; ok && f.committed {
			return bad("ABORT after COMMIT")
		}
		delete(c.active, r.Tx)
		c.done[r.Tx] = finished{reason: r.Reason}
	case RecEvent:
	default:
		return bad("not a coordinator record")
	}
	return nil
}

func newCoordTx(id string, nodes []string) *coordTx {
	return &coordTx{
		id:    id,
		state: CoordCollecting,
		nodes: slices.Clone(nodes),
		votes: make([]Vote, len(nodes)),
		acked: make([]bool, len(nodes)),
	}
}

// Start begins a new epoch (a forced record) and resumes the work the log
// left unfinished: transactions that never reached a decision are aborted
// (presumed abort; their participants are told), and committed ones that
// lack ACKs have COMMIT resent.
func (c *Coordinator) Start() {
	if c.started {
		return
	}
	c.started = true
	c.epoch++
	c.rd.Records = append(c.rd.Records, Record{Type: RecEpoch, Epoch: c.epoch, Force: true})
	ids := make([]string, 0, len(c.active))
	for id := range c.active {
		ids = append(ids, id)
	}
	slices.Sort(ids) // deterministic order
	for _, id := range ids {
		t := c.active[id]
		switch t.state {
		case CoordCollecting:
			c.abort(t, "coordinator restarted before deciding", true)
		case CoordCommitting:
			if !slices.Contains(t.acked, false) {
				// Every ACK is logged but END was lost (a torn tail): no
				// COMMIT is owed and no ACK will come, so finish it now.
				c.end(t)
				continue
			}
			c.sendCommits(t)
			c.armRetry(t)
		}
	}
}

// Propose starts a transaction. A transaction id that was proposed before is
// not run again: its first outcome is reported (now, or when it is decided),
// marked Duplicate.
func (c *Coordinator) Propose(tx string, branches []Branch) error {
	if !c.started {
		return ErrNotStarted
	}
	if t, ok := c.active[tx]; ok {
		if t.state == CoordCollecting {
			t.dups++
		} else {
			c.rd.Outcomes = append(c.rd.Outcomes, Outcome{Tx: tx, Committed: true, Duplicate: true})
		}
		return nil
	}
	if f, ok := c.done[tx]; ok {
		c.rd.Outcomes = append(c.rd.Outcomes, Outcome{Tx: tx, Committed: f.committed, Reason: f.reason, Duplicate: true})
		return nil
	}
	if tx == "" || len(branches) == 0 {
		return fmt.Errorf("%w: empty id or no branches", ErrInvalidTx)
	}
	if c.cfg.MaxInflight > 0 && len(c.active) >= c.cfg.MaxInflight {
		return ErrBusy
	}
	nodes := make([]string, len(branches))
	for i, b := range branches {
		if b.Node == "" || b.Node == c.cfg.ID || slices.Contains(nodes[:i], b.Node) {
			return fmt.Errorf("%w: bad or repeated participant %q", ErrInvalidTx, b.Node)
		}
		nodes[i] = b.Node
	}
	t := newCoordTx(tx, nodes)
	c.lastTS++
	t.ts = c.epoch<<40 | c.lastTS
	t.ops = make([][]byte, len(branches))
	for i, b := range branches {
		t.ops[i] = b.Op
	}
	c.active[tx] = t
	c.rd.Records = append(c.rd.Records, Record{Type: RecBegin, Tx: tx, Nodes: nodes})
	for _, b := range branches {
		c.rd.Messages = append(c.rd.Messages, Message{
			Type: MsgPrepare, From: c.cfg.ID, To: b.Node, Tx: tx, Epoch: c.epoch, Op: b.Op, TS: t.ts,
		})
	}
	c.timers.add(c.now+c.cfg.PrepareTimeout, tx, timerPrepare, t.gen)
	return nil
}

func (c *Coordinator) send(typ MsgType, to, tx string, op []byte, reason string) {
	c.rd.Messages = append(c.rd.Messages, Message{
		Type: typ, From: c.cfg.ID, To: to, Tx: tx, Epoch: c.epoch, Op: op, Reason: reason,
	})
}

// Step processes one message from a participant.
func (c *Coordinator) Step(m Message) {
	if !c.started {
		return // not serving yet: the sender retries
	}
	switch m.Type {
	case MsgVote:
		c.stepVote(m)
	case MsgAck:
		c.stepAck(m)
	case MsgInquire:
		c.stepInquire(m)
	case MsgWound:
		if t := c.active[m.Tx]; t != nil && t.state == CoordCollecting {
			c.dl.Wounds++
			reason := m.Reason
			if reason == "" {
				reason = "deadlock: wounded by an older transaction"
			}
			c.abort(t, reason, false)
		}
	case MsgRestarted:
		c.stepRestarted(m.From)
	case MsgWaits:
		c.waits[m.From] = waitReport{at: c.now, waits: m.Waits}
		c.detect()
	default:
		c.event(m.Tx, "unexpected message "+m.String())
	}
}

func (c *Coordinator) stepVote(m Message) {
	t := c.active[m.Tx]
	if t == nil {
		// Finished or never known here. A YES voter must learn the outcome;
		// an unknown transaction is presumed aborted.
		if m.Vote == VoteYes {
			if f, ok := c.done[m.Tx]; ok && f.committed {
				c.send(MsgCommit, m.From, m.Tx, nil, "")
			} else {
				c.presumeAbort(m.Tx, m.From)
			}
		}
		return
	}
	i := t.index(m.From)
	if i < 0 {
		c.event(m.Tx, "vote from a node that is not a participant: "+m.From)
		return
	}
	switch t.state {
	case CoordCollecting:
		if t.votes[i] != 0 {
			return // duplicate vote
		}
		if m.Vote == 0 || m.Vote >= voteEnd {
			c.event(m.Tx, "invalid vote from "+m.From)
			return
		}
		t.votes[i] = m.Vote
		c.rd.Records = append(c.rd.Records, Record{Type: RecVoted, Tx: m.Tx, Node: m.From, Vote: m.Vote, Reason: m.Reason})
		if m.Vote == VoteNo {
			reason := m.Reason
			if reason == "" {
				reason = "voted no"
			}
			c.abort(t, m.From+": "+reason, false)
			return
		}
		for _, v := range t.votes {
			if v == 0 {
				return
			}
		}
		c.commit(t)
	case CoordCommitting:
		if m.Vote == VoteYes && !t.acked[i] {
			c.send(MsgCommit, m.From, m.Tx, nil, "") // a late duplicate YES: remind it
		}
	}
}

func (c *Coordinator) stepAck(m Message) {
	t := c.active[m.Tx]
	if t == nil || t.state != CoordCommitting {
		return // duplicate or late ACK
	}
	i := t.index(m.From)
	if i < 0 || t.acked[i] {
		return
	}
	t.acked[i] = true
	c.rd.Records = append(c.rd.Records, Record{Type: RecAcked, Tx: m.Tx, Node: m.From})
	for _, a := range t.acked {
		if !a {
			return
		}
	}
	c.end(t)
}

func (c *Coordinator) stepInquire(m Message) {
	if t := c.active[m.Tx]; t != nil {
		if t.state == CoordCommitting {
			c.send(MsgCommit, m.From, m.Tx, nil, "")
		}
		return // collecting: pending, no answer yet
	}
	if f, ok := c.done[m.Tx]; ok && f.committed {
		c.send(MsgCommit, m.From, m.Tx, nil, "")
		return
	}
	c.presumeAbort(m.Tx, m.From)
}

// presumeAbort answers ABORT for a transaction that is not in flight. An
// ABORT for one never heard of (its BEGIN lost in a crash) is a decision
// all the same: it is remembered, and logged, forced before the answer
// leaves, so that a resubmission of the id (now or after a restart) gets
// this outcome instead of running afresh and committing while the ABORT
// may still be on its way to a branch that prepared for the new run.
// (Found by sim: TestRegressPresumedAbortForgotten.)
func (c *Coordinator) presumeAbort(tx, node string) {
	const reason = "presumed abort"
	if _, ok := c.done[tx]; !ok {
		c.rd.Records = append(c.rd.Records, Record{Type: RecAbort, Tx: tx, Nodes: []string{node}, Reason: reason, Force: true})
		c.done[tx] = finished{reason: reason}
	}
	c.send(MsgAbort, node, tx, nil, reason)
}

// detect merges the participants' fresh wait-for reports into one graph and
// aborts the youngest transaction of every cycle.
//
// A report can be stale, so a merged cycle may have vanished meanwhile. An
// edge W->H at a participant disappears only when H releases its lock there
// (H was decided, or voted NO there) or W stops waiting there (W got the
// lock after H released it, or W voted NO). Only edges between transactions
// still collecting votes here are used, so a false cycle needs a NO vote or
// a decision still in flight within the report's travel time; its victim
// is then a transaction that has not decided yet: aborting it is safe, only
// wasted work. It is rare and counted like any cycle.
func (c *Coordinator) detect() {
	var edges []lockmgr.Edge
	age := map[[2]string]uint64{}
	for node, r := range c.waits {
		if c.now-r.at > c.cfg.WaitsTTL {
			delete(c.waits, node)
			continue
		}
		for _, w := range r.waits {
			if !c.collecting(w.Waiter) || !c.collecting(w.Holder) || w.Waiter == w.Holder {
				continue
			}
			edges = append(edges, lockmgr.Edge{Waiter: w.Waiter, Holder: w.Holder, Key: node})
			k := [2]string{w.Waiter, w.Holder}
			if a, ok := age[k]; !ok || w.Age+(c.now-r.at) < a {
				age[k] = w.Age + (c.now - r.at)
			}
		}
	}
	if len(edges) == 0 {
		return
	}
	for _, cycle := range lockmgr.FindCycles(edges) {
		alive := true
		for _, tx := range cycle {
			alive = alive && c.collecting(tx)
		}
		if !alive {
			continue // broken already by a victim of an earlier cycle
		}
		victim := lockmgr.Victim(cycle, func(tx string) uint64 { return c.active[tx].ts })
		youngest := uint64(1<<63 - 1)
		for i := 0; i+1 < len(cycle); i++ {
			youngest = min(youngest, age[[2]string{cycle[i], cycle[i+1]}])
		}
		c.dl.Cycles++
		if len(c.dl.DetectTicks) < 4096 {
			c.dl.DetectTicks = append(c.dl.DetectTicks, youngest)
		}
		reason := fmt.Sprintf("deadlock: cycle %s; victim %s (youngest)", strings.Join(cycle, "->"), victim)
		c.event(victim, reason)
		c.abort(c.active[victim], reason, false)
	}
}

// stepRestarted resends PREPARE for every transaction still collecting
// votes whose vote from node is missing: node came back from a crash, so
// the PREPARE may be lost. A PREPARE is idempotent (a duplicate gets the
// same vote), so resending one that did arrive is harmless.
func (c *Coordinator) stepRestarted(node string) {
	var ids []string
	for id, t := range c.active {
		if i := t.index(node); i >= 0 && t.state == CoordCollecting && t.votes[i] == 0 && t.ops != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids) // deterministic
	for _, id := range ids {
		t := c.active[id]
		i := t.index(node)
		c.rd.Messages = append(c.rd.Messages, Message{
			Type: MsgPrepare, From: c.cfg.ID, To: node, Tx: id, Epoch: c.epoch, Op: t.ops[i], TS: t.ts,
		})
	}
}

func (c *Coordinator) collecting(tx string) bool {
	t := c.active[tx]
	return t != nil && t.state == CoordCollecting
}

// commit decides COMMIT: forced record, then COMMIT to every YES voter and
// the client's outcome (both leave only after the record is durable).
func (c *Coordinator) commit(t *coordTx) {
	t.state = CoordCommitting
	t.ops = nil
	t.gen++
	var owe []string
	for i, v := range t.votes {
		if v == VoteReadOnly {
			t.acked[i] = true
		} else {
			owe = append(owe, t.nodes[i])
		}
	}
	c.rd.Records = append(c.rd.Records, Record{Type: RecCommit, Tx: t.id, Nodes: owe, Force: true})
	c.outcome(t, Outcome{Tx: t.id, Committed: true})
	if len(owe) == 0 {
		c.end(t)
		return
	}
	c.sendCommits(t)
	c.armRetry(t)
}

func (c *Coordinator) sendCommits(t *coordTx) {
	for i, n := range t.nodes {
		if !t.acked[i] {
			c.send(MsgCommit, n, t.id, nil, "")
		}
	}
}

func (c *Coordinator) armRetry(t *coordTx) {
	d := backoff(c.cfg.RetryBase, c.cfg.RetryMax, t.attempts, c.cfg.Rand)
	c.timers.add(c.now+d, t.id, timerRetry, t.gen)
}

func (c *Coordinator) end(t *coordTx) {
	c.rd.Records = append(c.rd.Records, Record{Type: RecEnd, Tx: t.id})
	delete(c.active, t.id)
	c.done[t.id] = finished{committed: true}
}

// abort decides ABORT. Only participants that may hold a prepared or waiting
// branch are told: those that voted YES and those that have not voted.
func (c *Coordinator) abort(t *coordTx, reason string, recovered bool) {
	var tell []string
	for i, v := range t.votes {
		if v == 0 || v == VoteYes {
			tell = append(tell, t.nodes[i])
		}
	}
	c.rd.Records = append(c.rd.Records, Record{Type: RecAbort, Tx: t.id, Nodes: tell, Reason: reason})
	for _, n := range tell {
		c.send(MsgAbort, n, t.id, nil, reason)
	}
	delete(c.active, t.id)
	c.done[t.id] = finished{reason: reason}
	c.outcome(t, Outcome{Tx: t.id, Reason: reason, Recovered: recovered})
}

func (c *Coordinator) outcome(t *coordTx, o Outcome) {
	c.rd.Outcomes = append(c.rd.Outcomes, o)
	for ; t.dups > 0; t.dups-- {
		d := o
		d.Duplicate = true
		c.rd.Outcomes = append(c.rd.Outcomes, d)
	}
}

func (c *Coordinator) event(tx, what string) {
	c.rd.Records = append(c.rd.Records, Record{Type: RecEvent, Tx: tx, Reason: what})
}

// Tick advances time by one tick and fires due timers: prepare-phase
// timeouts abort; commit-phase retries resend COMMIT (never abort).
func (c *Coordinator) Tick() {
	c.now++
	if !c.started {
		return
	}
	for {
		tm, ok := c.timers.pop(c.now)
		if !ok {
			return
		}
		t := c.active[tm.tx]
		if t == nil || t.gen != tm.gen {
			continue
		}
		switch {
		case tm.kind == timerPrepare && t.state == CoordCollecting:
			var late []string
			for i, v := range t.votes {
				if v == 0 {
					late = append(late, t.nodes[i])
				}
			}
			reason := fmt.Sprintf("prepare timeout: %s did not vote within %d ticks", strings.Join(late, ", "), c.cfg.PrepareTimeout)
			c.event(t.id, reason)
			c.abort(t, reason, false)
		case tm.kind == timerRetry && t.state == CoordCommitting:
			t.attempts++
			c.event(t.id, fmt.Sprintf("commit retry %d", t.attempts))
			c.sendCommits(t)
			c.armRetry(t)
		}
	}
}

// HasReady reports whether Ready has anything to hand out.
func (c *Coordinator) HasReady() bool { return !c.rd.Empty() }

// Ready returns the work accumulated since the last Advance. Its slices
// are reused: they are valid only until the next Advance. The slices are
// owned by the caller until Advance.
func (c *Coordinator) Ready() Ready { return c.rd }

// Advance tells the machine the last Ready was carried out.
func (c *Coordinator) Advance() { c.rd.reset() }
