package twopc

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/dtx-dev/dtx/internal/mutant"
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
	// MaxAttempts bounds how many times a transaction runs when it is
	// aborted as a deadlock victim (wounded, a global cycle's victim, or a
	// local cycle's victim voting NO) while collecting votes: instead of
	// reporting the abort, the coordinator restarts it as a new attempt
	// with the same id, timestamp and operations, so an older transaction
	// stays older and is never starved. The abort is reported after the
	// last attempt. 0 means DefaultMaxAttempts; 1 means no restart.
	// Timeouts and NO votes for other reasons are never restarted.
	MaxAttempts int
	// RestartBase and RestartMax bound the pause, in ticks, before a
	// restarted attempt sends its PREPAREs: base doubled per attempt, plus
	// jitter. The pause lets the transaction that won the conflict finish
	// first, so that the restarted one (older than everything that arrived
	// since) does not at once wound the next holder of the same keys. 0
	// means no pause.
	RestartBase, RestartMax uint64
	// PresumeBudget bounds, per participant and per PresumeWindow ticks,
	// the presumed-abort answers about transactions this coordinator never
	// heard of. Each such answer is a forced record and an outcome kept, so
	// a participant that sends a flood of votes or inquiries about made-up
	// ids could otherwise grow the log and the memory without end. Past the
	// budget the message is dropped and counted (Shed); an honest
	// participant asks again later. 0 means 4096 per 1000 ticks.
	PresumeBudget, PresumeWindow uint64
	// Retention is how long, in ticks of running time, a finished
	// transaction's outcome is kept for duplicate detection: at least
	// Retention, less than about 8/7 of it (Generations generations);
	// then its id is remembered as expired for at least another Retention
	// (see retain.go). 0 keeps every outcome forever and never
	// checkpoints.
	Retention uint64
	// RetainMax, with Retention set, also rotates the generations once
	// the current one holds a seventh of RetainMax outcomes (checked
	// every tick), so at most about 8/7 of RetainMax outcomes are kept.
	// 0: no count bound.
	RetainMax int
	// Mutants plants bugs, for the tests that show they are caught
	// (package mutant). Zero in production.
	Mutants mutant.Set
}

// DefaultMaxAttempts is MaxAttempts when it is not set.
const DefaultMaxAttempts = 8

// DefaultCoordinatorConfig returns a config for 1 ms ticks.
func DefaultCoordinatorConfig() CoordinatorConfig {
	return CoordinatorConfig{
		ID:             CoordinatorID,
		PrepareTimeout: 1000,
		RetryBase:      50,
		RetryMax:       2000,
		MaxInflight:    1 << 16,
		MaxAttempts:    DefaultMaxAttempts,
		RestartBase:    25,
		RestartMax:     200,
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
	case c.RetainMax < 0:
		return fmt.Errorf("twopc: RetainMax must be >= 0")
	case c.RetainMax > 0 && c.Retention == 0:
		return fmt.Errorf("twopc: RetainMax needs a Retention")
	case c.MaxAttempts < 0:
		return fmt.Errorf("twopc: MaxAttempts must be >= 0 (0: default %d, 1: no restarts)", DefaultMaxAttempts)
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
	ts       uint64   // timestamp: smaller is older (not logged); kept across attempts
	ops      [][]byte // per node, while collecting: to resend PREPARE (not logged)
	attempt  uint32   // current attempt, 1-based (see CoordinatorConfig.MaxAttempts)
	started  uint64   // tick the current attempt began (not logged)
}

func (t *coordTx) index(node string) int {
	return slices.Index(t.nodes, node)
}

// finished is what the coordinator remembers of a finished transaction.
type finished struct {
	committed bool
	reason    string
	attempt   uint32 // committed: the attempt that committed (every other one aborted)
}

// finish remembers tx's outcome (in a table the garbage collector does not
// trace: it holds every transaction ever finished).
func (c *Coordinator) finish(tx string, f finished) {
	var st uint8
	if f.committed {
		st = 1
	}
	c.done.Put(tx, txVal{state: st, a: f.attempt}, f.reason)
}

// finishedTx returns what is remembered of a finished tx.
func (c *Coordinator) finishedTx(tx string) (finished, bool) {
	h := txHash(c.seed, tx)
	v, reason, ok := c.done.getH(tx, h)
	for i := len(c.older) - 1; i >= 0 && !ok; i-- {
		v, reason, ok = c.older[i].getH(tx, h)
	}
	return finished{committed: v.state == 1, reason: reason, attempt: v.a}, ok
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
	seed    maphash.Seed        // of done and older: one hash per lookup
	done    *txTable            // committed (END) or aborted: the current generation
	older   []*txTable          // the earlier generations, oldest first, packed
	exps    []expiredSet        // the ids of dropped generations, oldest first
	// expiredN counts the ids in exps; genStart is the tick the current
	// generation began; checkpoints counts rotations.
	expiredN    int
	genStart    uint64
	checkpoints uint64
	// restored says a snapshot was loaded (RestoreSnapshot).
	restored bool
	timers   timers
	rd       Ready
	lastTS   uint64
	waits    map[string]waitReport // latest wait-for report per participant
	dl       DeadlockStats
	// presumed counts, per participant, the presumed-abort answers about
	// unknown transactions in the current window (PresumeBudget).
	presumed      map[string]uint64
	presumedSince uint64 // tick the current window began
	shed          uint64 // messages dropped past the budget
	ignored       uint64 // peer messages dropped as useless (ignore)
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
	// Restarts is the number of deadlock victims (wounded, or victims of
	// a global or local cycle) restarted as a new attempt instead of being
	// reported aborted.
	Restarts uint64
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
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.PresumeBudget == 0 {
		cfg.PresumeBudget = 4096
	}
	if cfg.PresumeWindow == 0 {
		cfg.PresumeWindow = 1000
	}
	seed := maphash.MakeSeed()
	return &Coordinator{
		cfg:      cfg,
		active:   make(map[string]*coordTx),
		seed:     seed,
		done:     newTxTableSeed(seed),
		waits:    make(map[string]waitReport),
		presumed: make(map[string]uint64),
	}, nil
}

// Shed returns how many messages about unknown transactions were dropped
// past a participant's PresumeBudget.
func (c *Coordinator) Shed() uint64 { return c.shed }

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
	if f, ok := c.finishedTx(tx); ok {
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
		if c.known(r.Tx) {
			return bad("transaction begun after it finished")
		}
		c.active[r.Tx] = newCoordTx(r.Tx, r.Nodes)
	case RecVoted:
		if t := c.active[r.Tx]; t != nil && t.state == CoordCollecting && AttemptOf(r.Attempt) == t.attempt {
			if i := t.index(r.Node); i >= 0 {
				t.votes[i] = r.Vote
			}
		}
	case RecCommit:
		t, why := c.collectingAt(r)
		if why != "" {
			return bad("COMMIT " + why)
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
			if c.known(r.Tx) || t != nil {
				return bad("END for a transaction that is not committing")
			}
		}
		delete(c.active, r.Tx)
		attempt := AttemptOf(r.Attempt)
		if t != nil {
			attempt = t.attempt
		}
		c.finish(r.Tx, finished{committed: true, attempt: attempt})
	case RecRestart:
		t, why := c.collectingAt(r)
		if why != "" {
			return bad("RESTART " + why)
		}
		t.attempt++
		clear(t.votes)
	case RecAbort:
		if t := c.active[r.Tx]; t != nil && t.state == CoordCommitting {
			return bad("ABORT after COMMIT")
		}
		if f, ok := c.finishedTx(r.Tx); ok && f.committed {
			return bad("ABORT after COMMIT")
		}
		delete(c.active, r.Tx)
		c.finish(r.Tx, finished{reason: r.Reason, attempt: AttemptOf(r.Attempt)})
	case RecCheckpoint:
		return c.restoreCheckpoint(r)
	case RecEvent:
	default:
		return bad("not a coordinator record")
	}
	return nil
}

func newCoordTx(id string, nodes []string) *coordTx {
	return &coordTx{
		id:      id,
		attempt: 1,
		state:   CoordCollecting,
		nodes:   slices.Clone(nodes),
		votes:   make([]Vote, len(nodes)),
		acked:   make([]bool, len(nodes)),
	}
}

// collectingAt returns, during Restore, the collecting transaction that a
// decision record (COMMIT or RESTART) r applies to, at r's attempt, or why
// the record does not fit the log. A transaction whose BEGIN was compacted
// away is recreated from the record.
func (c *Coordinator) collectingAt(r Record) (*coordTx, string) {
	t := c.active[r.Tx]
	if t == nil {
		if c.known(r.Tx) {
			return nil, "after the transaction finished"
		}
		t = newCoordTx(r.Tx, r.Nodes) // BEGIN compacted away
		t.attempt = AttemptOf(r.Attempt)
		c.active[r.Tx] = t
	}
	if t.state != CoordCollecting {
		return nil, "for a transaction already " + t.state.String()
	}
	if AttemptOf(r.Attempt) != t.attempt {
		// RESTART is forced before the next attempt's PREPARE leaves, so
		// the log always names the attempt before it commits or restarts.
		return nil, fmt.Sprintf("of attempt %d, but the log is at attempt %d", AttemptOf(r.Attempt), t.attempt)
	}
	return t, ""
}

// Start begins a new epoch (a forced record) and resumes the work the log
// left unfinished: transactions that never reached a decision are aborted
// (presumed abort; their participants are told), and committed ones that
// lack ACKs have COMMIT resent.
func (c *Coordinator) Start() { c.StartAtLeast(0) }

// StartAtLeast is Start with a new epoch of at least floor (and, as ever,
// above every epoch in the log). A replicated coordinator passes the term
// in which its replica leads (package replica): every leader that speaks
// has logged its epoch through the group before its first message, so the
// next leader's epoch is higher, and participants fence off a deposed
// leader with the epoch check they already make.
func (c *Coordinator) StartAtLeast(floor uint64) {
	if c.started {
		return
	}
	if floor > 0 && c.epoch+1 < floor {
		c.epoch = floor - 1
	}
	c.started = true
	c.genStart = c.now
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
	if f, ok := c.finishedTx(tx); ok {
		c.rd.Outcomes = append(c.rd.Outcomes, Outcome{Tx: tx, Committed: f.committed, Reason: f.reason, Duplicate: true})
		return nil
	}
	if c.expired(tx) {
		return ErrOutcomeExpired
	}
	if len(branches) == 0 {
		return fmt.Errorf("%w: no branches", ErrInvalidTx)
	}
	if err := ValidTxID(tx); err != nil {
		return err
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
	t.started = c.now
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
			Type: MsgPrepare, From: c.cfg.ID, To: b.Node, Tx: tx, Epoch: c.epoch, Op: b.Op, TS: t.ts, Attempt: t.attempt,
		})
	}
	c.timers.add(c.now+c.cfg.PrepareTimeout, tx, timerPrepare, t.gen)
	return nil
}

func (c *Coordinator) send(typ MsgType, to, tx string, attempt uint32, reason string) {
	c.rd.Messages = append(c.rd.Messages, Message{
		Type: typ, From: c.cfg.ID, To: to, Tx: tx, Epoch: c.epoch, Reason: reason, Attempt: attempt,
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
		// A wound for an earlier attempt is stale: that attempt is aborted
		// already, and the current one may not even hold the lock.
		if t := c.active[m.Tx]; t != nil && t.state == CoordCollecting && AttemptOf(m.Attempt) == t.attempt && t.index(m.From) >= 0 {
			c.dl.Wounds++
			reason := m.Reason
			if reason == "" {
				reason = DeadlockReasonPrefix + "wounded by an older transaction"
			}
			c.abortOrRestart(t, reason)
		}
	case MsgRestarted:
		c.stepRestarted(m.From)
	case MsgWaits:
		c.waits[m.From] = waitReport{at: c.now, waits: m.Waits}
		c.detect()
	default:
		c.ignore()
	}
}

func (c *Coordinator) stepVote(m Message) {
	a := AttemptOf(m.Attempt)
	t := c.active[m.Tx]
	if t == nil {
		// Finished or never known here. A YES voter must learn the outcome;
		// an unknown transaction is presumed aborted.
		if m.Vote == VoteYes {
			c.answer(m.Tx, m.From, a)
		}
		return
	}
	i := t.index(m.From)
	if i < 0 {
		c.ignore()
		return
	}
	if a != t.attempt {
		// A vote of another attempt counts for nothing. An earlier attempt
		// was aborted before the current one began: a YES voter of it that
		// missed its ABORT is told again (harmless if it moved on).
		if a < t.attempt && m.Vote == VoteYes {
			c.send(MsgAbort, m.From, m.Tx, a, "attempt superseded")
		}
		return
	}
	switch t.state {
	case CoordCollecting:
		if t.votes[i] != 0 {
			return // duplicate vote
		}
		if m.Vote == 0 || m.Vote >= voteEnd {
			c.ignore()
			return
		}
		if m.Epoch > c.epoch && m.Epoch-c.epoch <= MaxEpochStep {
			// This participant believes in a higher epoch than ours (only a
			// forged PREPARE can have taught it one), so it fences off our
			// PREPAREs as stale. Move up to it, so that the next ones pass:
			// one forged message costs one transaction, not every one.
			c.epoch = m.Epoch
			c.rd.Records = append(c.rd.Records, Record{Type: RecEpoch, Epoch: c.epoch, Force: true})
		}
		t.votes[i] = m.Vote
		c.rd.Records = append(c.rd.Records, Record{Type: RecVoted, Tx: m.Tx, Node: m.From, Vote: m.Vote, Reason: m.Reason, Attempt: a})
		if m.Vote == VoteNo {
			reason := m.Reason
			if reason == "" {
				reason = "voted no"
			}
			if strings.HasPrefix(reason, DeadlockReasonPrefix) {
				// A local cycle's victim: restart it like a global one.
				c.abortOrRestart(t, m.From+": "+reason)
				return
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
			c.send(MsgCommit, m.From, m.Tx, t.attempt, "") // a late duplicate YES: remind it
		}
	}
}

// answer tells node the outcome of attempt a of a transaction that is not
// in flight: COMMIT only if that very attempt committed; otherwise ABORT
// (every other attempt of a committed transaction was aborted before the
// next began; an unknown transaction is presumed aborted).
func (c *Coordinator) answer(tx, node string, a uint32) {
	f, ok := c.finishedTx(tx)
	switch {
	case ok && f.committed && f.attempt == a:
		c.send(MsgCommit, node, tx, a, "")
	case ok && f.committed:
		c.send(MsgAbort, node, tx, a, fmt.Sprintf("attempt %d superseded by attempt %d", a, f.attempt))
	default:
		c.presumeAbort(tx, node, a)
	}
}

func (c *Coordinator) stepAck(m Message) {
	t := c.active[m.Tx]
	if t == nil || t.state != CoordCommitting || AttemptOf(m.Attempt) != t.attempt {
		return // duplicate or late ACK
	}
	i := t.index(m.From)
	if i < 0 || t.acked[i] {
		return
	}
	t.acked[i] = true
	c.rd.Records = append(c.rd.Records, Record{Type: RecAcked, Tx: m.Tx, Node: m.From})
	if strings.HasPrefix(m.Reason, HeuristicMismatchPrefix) && len(m.Reason) <= 1024 {
		// The branch was decided by hand the other way (heuristic.go):
		// kept in the log, once (a duplicate ACK does not come here).
		c.event(m.Tx, m.From+": "+m.Reason)
	}
	for _, a := range t.acked {
		if !a {
			return
		}
	}
	c.end(t)
}

// stepInquire answers an in-doubt branch about its attempt: COMMIT only if
// that attempt committed, ABORT if it was aborted (an earlier attempt of a
// transaction now running or committed a later one), nothing while that
// attempt is still collecting votes.
func (c *Coordinator) stepInquire(m Message) {
	a := AttemptOf(m.Attempt)
	if t := c.active[m.Tx]; t != nil {
		if t.index(m.From) < 0 {
			c.ignore()
			return
		}
		switch {
		case a < t.attempt:
			c.send(MsgAbort, m.From, m.Tx, a, fmt.Sprintf("attempt %d superseded by attempt %d", a, t.attempt))
		case a > t.attempt:
			c.ignore()
		case t.state == CoordCommitting:
			c.send(MsgCommit, m.From, m.Tx, a, "")
		}
		return // collecting: pending, no answer yet
	}
	c.answer(m.Tx, m.From, a)
}

// presumeAbort answers ABORT for a transaction that is not in flight. An
// ABORT for one never heard of (its BEGIN lost in a crash) is a decision
// all the same: it is remembered, and logged, forced before the answer
// leaves, so that a resubmission of the id (now or after a restart) gets
// this outcome instead of running afresh and committing while the ABORT
// may still be on its way to a branch that prepared for the new run.
// (Found by sim: TestRegressPresumedAbortForgotten.)
func (c *Coordinator) presumeAbort(tx, node string, attempt uint32) {
	const reason = "presumed abort"
	if c.expired(tx) {
		// Its outcome was dropped: not remembered as aborted (it may have
		// committed), and a resubmission stays refused as expired.
		c.send(MsgAbort, node, tx, attempt, reason)
		return
	}
	if !c.known(tx) {
		if c.now-c.presumedSince >= c.cfg.PresumeWindow {
			clear(c.presumed)
			c.presumedSince = c.now
		}
		if c.presumed[node] >= c.cfg.PresumeBudget {
			c.shed++
			return
		}
		c.presumed[node]++
		c.rd.Records = append(c.rd.Records, Record{Type: RecAbort, Tx: tx, Nodes: []string{node}, Reason: reason, Force: true, Attempt: attempt})
		c.finish(tx, finished{reason: reason, attempt: attempt})
	}
	c.send(MsgAbort, node, tx, attempt, reason)
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
			if c.active[w.Waiter].index(node) < 0 || c.active[w.Holder].index(node) < 0 {
				continue // a participant speaks only of its own branches
			}
			if r.at <= c.active[w.Waiter].started || r.at <= c.active[w.Holder].started {
				// The report predates the current attempt of one end: the
				// edge may be its earlier attempt's, which was aborted.
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
		ts := func(tx string) uint64 { return c.active[tx].ts }
		victim := lockmgr.Victim(cycle, ts)
		if c.cfg.Mutants.Has(mutant.OffCycleVictim) {
			victim = offCycleVictim(edges, ts)
		}
		youngest := uint64(1<<63 - 1)
		for i := 0; i+1 < len(cycle); i++ {
			youngest = min(youngest, age[[2]string{cycle[i], cycle[i+1]}])
		}
		c.dl.Cycles++
		if len(c.dl.DetectTicks) < 4096 {
			c.dl.DetectTicks = append(c.dl.DetectTicks, youngest)
		}
		reason := CycleReason(cycle, victim, false)
		c.event(victim, reason)
		c.abortOrRestart(c.active[victim], reason)
	}
}

// offCycleVictim is the planted bug mutant.OffCycleVictim: the youngest
// transaction of the whole merged graph, on the cycle or not.
func offCycleVictim(edges []lockmgr.Edge, ts func(string) uint64) string {
	txs := make([]string, 0, 2*len(edges))
	for _, e := range edges {
		txs = append(txs, e.Waiter, e.Holder)
	}
	return lockmgr.Victim(txs, ts)
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
			Type: MsgPrepare, From: c.cfg.ID, To: node, Tx: id, Epoch: c.epoch, Op: t.ops[i], TS: t.ts, Attempt: t.attempt,
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
	c.rd.Records = append(c.rd.Records, Record{Type: RecCommit, Tx: t.id, Nodes: owe, Force: true, Attempt: t.attempt})
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
			c.send(MsgCommit, n, t.id, t.attempt, "")
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
	c.finish(t.id, finished{committed: true, attempt: t.attempt})
}

// abort decides ABORT. Only participants that may hold a prepared or waiting
// branch are told: those that voted YES and those that have not voted.
func (c *Coordinator) abort(t *coordTx, reason string, recovered bool) {
	tell := t.undecided()
	c.rd.Records = append(c.rd.Records, Record{Type: RecAbort, Tx: t.id, Nodes: tell, Reason: reason, Attempt: t.attempt})
	for _, n := range tell {
		c.send(MsgAbort, n, t.id, t.attempt, reason)
	}
	delete(c.active, t.id)
	c.finish(t.id, finished{reason: reason, attempt: t.attempt})
	c.outcome(t, Outcome{Tx: t.id, Reason: reason, Recovered: recovered})
}

// undecided returns the participants that may hold a prepared or waiting
// branch of the current attempt: those that voted YES or have not voted.
func (t *coordTx) undecided() []string {
	var tell []string
	for i, v := range t.votes {
		if v == 0 || v == VoteYes {
			tell = append(tell, t.nodes[i])
		}
	}
	return tell
}

// abortOrRestart handles a deadlock victim that is still collecting votes:
// it aborts the current attempt and, unless that was the last one
// (MaxAttempts), starts the next attempt of the transaction at once with
// the same timestamp and operations instead of reporting the abort. The
// RESTART record is forced before the new PREPAREs leave, so that the log
// always knows the attempt a participant may have prepared.
//
// The old attempt's ABORT goes to its possible holders, and the new
// PREPARE to everyone; a participant still holding the old attempt when
// the new PREPARE arrives aborts it first (it can: the old attempt is
// decided). An older transaction keeps its timestamp across attempts, so it
// only ever gets older relative to new transactions, and is not starved.
func (c *Coordinator) abortOrRestart(t *coordTx, reason string) {
	if int(t.attempt) >= c.cfg.MaxAttempts || t.ops == nil {
		if t.attempt > 1 {
			reason = fmt.Sprintf("%s (attempt %d of %d)", reason, t.attempt, c.cfg.MaxAttempts)
		}
		c.abort(t, reason, false)
		return
	}
	tell := t.undecided()
	c.dl.Restarts++
	c.rd.Records = append(c.rd.Records, Record{Type: RecRestart, Tx: t.id, Nodes: tell, Reason: reason, Attempt: t.attempt, Force: true})
	for _, n := range tell {
		c.send(MsgAbort, n, t.id, t.attempt, reason)
	}
	t.attempt++
	t.started = c.now
	clear(t.votes)
	t.gen++ // the old attempt's prepare timer no longer applies
	if c.cfg.RestartBase == 0 {
		c.prepareAttempt(t)
		return
	}
	pause := backoff(c.cfg.RestartBase, max(c.cfg.RestartBase, c.cfg.RestartMax), int(t.attempt)-2, c.cfg.Rand)
	c.timers.add(c.now+pause, t.id, timerRestart, t.gen)
}

// prepareAttempt sends the PREPAREs of t's current attempt and arms its
// prepare timeout.
func (c *Coordinator) prepareAttempt(t *coordTx) {
	t.started = c.now
	for i, n := range t.nodes {
		c.rd.Messages = append(c.rd.Messages, Message{
			Type: MsgPrepare, From: c.cfg.ID, To: n, Tx: t.id, Epoch: c.epoch, Op: t.ops[i], TS: t.ts, Attempt: t.attempt,
		})
	}
	c.timers.add(c.now+c.cfg.PrepareTimeout, t.id, timerPrepare, t.gen)
}

func (c *Coordinator) outcome(t *coordTx, o Outcome) {
	c.rd.Outcomes = append(c.rd.Outcomes, o)
	for ; t.dups > 0; t.dups-- {
		d := o
		d.Duplicate = true
		c.rd.Outcomes = append(c.rd.Outcomes, d)
	}
}

// ignore drops a peer's message that this coordinator has no use for
// (from a node that is not a participant of its transaction, about an
// attempt that does not exist, of a type it does not take). It is counted,
// not logged: a peer must not be able to grow the log by sending nonsense.
func (c *Coordinator) ignore() { c.ignored++ }

// Ignored returns how many peer messages were dropped as useless.
func (c *Coordinator) Ignored() uint64 { return c.ignored }

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
	c.maybeCheckpoint()
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
		case tm.kind == timerRestart && t.state == CoordCollecting:
			c.prepareAttempt(t)
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
