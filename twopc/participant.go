package twopc

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/dtx-dev/dtx/lockmgr"
)

// Resource is the business side of a participant: the state a branch
// changes. The Participant machine calls it only from its driver's
// goroutine, and only under the branch's locks.
type Resource interface {
	// Keys returns the keys the branch must lock exclusively, or an error
	// if the operation is malformed (the branch votes NO with it).
	Keys(tx string, op []byte) ([]string, error)
	// Prepare validates the operation under its locks and makes its
	// tentative change (a reservation, a hold). An error is a NO vote with
	// the error's text as the reason, and must leave the state unchanged.
	Prepare(tx string, op []byte) error
	// Commit makes a prepared branch's change final.
	Commit(tx string, op []byte)
	// Abort undoes a prepared branch's tentative change.
	Abort(tx string, op []byte)
}

// AttemptResource is a Resource that is told the attempt of every branch
// it prepares, commits or aborts. A resource whose prepared state lives
// outside the process (a database's prepared transaction) names it by
// transaction and attempt, so that it can tell its own after a restart;
// the machine calls these methods instead of Prepare, Commit and Abort
// when the Resource has them. attempt is 1-based (AttemptOf).
type AttemptResource interface {
	Resource
	PrepareAttempt(tx string, attempt uint32, op []byte) error
	CommitAttempt(tx string, attempt uint32, op []byte)
	AbortAttempt(tx string, attempt uint32, op []byte)
}

// AsAttemptResource returns r as an AttemptResource: r itself if it is
// one, else r with the attempt ignored.
func AsAttemptResource(r Resource) AttemptResource {
	if a, ok := r.(AttemptResource); ok {
		return a
	}
	return plainResource{r}
}

// ReplayPreparer is a Resource with a cheaper prepare for a branch
// replayed from the log: the machine calls ReplayPrepare instead of
// Prepare (or PrepareAttempt) for each PREPARED record it restores. That
// prepare succeeded when it was logged, and replay rebuilds the state it
// ran against exactly, so a check whose answer cannot have changed may be
// skipped (the order service's look-up of the id among its ledger's, a
// disk read each). It must make the same change as Prepare.
type ReplayPreparer interface {
	ReplayPrepare(tx string, attempt uint32, op []byte) error
}

// ReplayPrepare prepares a replayed branch on r: with its ReplayPrepare
// if it has one, else with PrepareAttempt. Wrappers of a Resource call it
// to pass ReplayPrepare through.
func ReplayPrepare(r AttemptResource, tx string, attempt uint32, op []byte) error {
	if rp, ok := r.(ReplayPreparer); ok {
		return rp.ReplayPrepare(tx, attempt, op)
	}
	return r.PrepareAttempt(tx, attempt, op)
}

type plainResource struct{ Resource }

func (r plainResource) ReplayPrepare(tx string, attempt uint32, op []byte) error {
	if rp, ok := r.Resource.(ReplayPreparer); ok {
		return rp.ReplayPrepare(tx, attempt, op)
	}
	return r.Prepare(tx, op)
}

func (r plainResource) PrepareAttempt(tx string, _ uint32, op []byte) error {
	return r.Prepare(tx, op)
}
func (r plainResource) CommitAttempt(tx string, _ uint32, op []byte) { r.Commit(tx, op) }
func (r plainResource) AbortAttempt(tx string, _ uint32, op []byte)  { r.Abort(tx, op) }

// BranchState is the state of one branch at a participant. The zero value
// is invalid.
type BranchState uint8

const (
	// BranchWaiting: PREPARE arrived; the branch waits for its locks.
	// Nothing is logged yet; it may still vote NO on its own.
	BranchWaiting BranchState = 1 + iota
	// BranchPrepared: PREPARED is logged and YES was sent. The branch holds
	// its locks and is in doubt until COMMIT or ABORT arrives; it may never
	// abandon the branch on its own.
	BranchPrepared
	// BranchCommitted: COMMITTED is logged; locks are released.
	BranchCommitted
	// BranchAborted: the branch voted NO or received ABORT; locks are
	// released. Remembered so that a late PREPARE votes NO.
	BranchAborted
)

func (s BranchState) String() string {
	switch s {
	case BranchWaiting:
		return "WAITING"
	case BranchPrepared:
		return "PREPARED"
	case BranchCommitted:
		return "COMMITTED"
	case BranchAborted:
		return "ABORTED"
	}
	return fmt.Sprintf("BranchState(%d)", uint8(s))
}

// ParticipantConfig configures a Participant. Times are in ticks.
type ParticipantConfig struct {
	// ID is the participant's node name.
	ID string
	// Coordinator is the node to answer and to ask (default CoordinatorID).
	Coordinator string
	// LockTimeout: a branch still waiting for locks after this many ticks
	// votes NO (the deadlock fall-back).
	LockTimeout uint64
	// InquireAfter: a prepared branch with no decision after this many
	// ticks asks the coordinator; later asks back off up to InquireMax.
	InquireAfter, InquireMax uint64
	// Rand returns random numbers for jitter; nil means none.
	Rand func() uint64
	// Deadlock is the deadlock policy (default DeadlockDetect).
	Deadlock DeadlockPolicy
	// DetectEvery: every this many ticks, waits are checked for local
	// cycles (detect) or younger holders to wound (wound-wait); under
	// detect, if a wait is older than DetectAfter, the wait-for edges are
	// reported to the coordinator. 0 means 5 and 5.
	DetectEvery, DetectAfter uint64
	// Retention is how long, in ticks of running time, a finished branch
	// is remembered: at least Retention, less than about 8/7 of it
	// (Generations generations, each taking new branches for
	// GenerationTicks(Retention) ticks; see rotate).
	// Set it to ParticipantRetention of the coordinator's Retention.
	// 0 remembers every finished branch forever.
	Retention uint64
}

// ParticipantRetention is the participants' Retention for a coordinator
// whose Retention is coord: twice as long, so that a late duplicate
// PREPARE of a branch a participant forgot reaches a coordinator that has
// forgotten the outcome too and answers it with a presumed ABORT (see
// forget). The coordinator drops an outcome less than Generations spans of
// its own after deciding it (about 8/7 of coord); for a window under 8
// ticks, where a span rounds up to a large part of it, the participant's
// is raised to those Generations spans. 0 stays 0 (remember forever).
func ParticipantRetention(coord uint64) uint64 {
	if coord == 0 {
		return 0
	}
	return max(2*coord, Generations*GenerationTicks(coord))
}

// DefaultParticipantConfig returns a config for 1 ms ticks.
func DefaultParticipantConfig(id string) ParticipantConfig {
	return ParticipantConfig{
		ID:           id,
		Coordinator:  CoordinatorID,
		LockTimeout:  500,
		InquireAfter: 2000,
		InquireMax:   5000,
		Deadlock:     DeadlockDetect,
		DetectEvery:  5,
		DetectAfter:  5,
	}
}

// Validate reports a config that cannot work.
func (c ParticipantConfig) Validate() error {
	switch {
	case c.ID == "" || c.Coordinator == "":
		return fmt.Errorf("twopc: participant ID and Coordinator must be set")
	case c.ID == c.Coordinator:
		return fmt.Errorf("twopc: participant ID equals the coordinator's")
	case c.LockTimeout == 0:
		return fmt.Errorf("twopc: LockTimeout must be > 0 ticks")
	case c.InquireAfter == 0 || c.InquireMax < c.InquireAfter:
		return fmt.Errorf("twopc: need 0 < InquireAfter <= InquireMax")
	case c.Deadlock >= deadlockPolicyEnd:
		return fmt.Errorf("twopc: invalid deadlock policy %d", c.Deadlock)
	}
	return nil
}

type branch struct {
	state     BranchState
	op        []byte
	reason    string // NO vote's reason
	gen       uint32
	attempts  int    // inquiries so far
	ts        uint64 // the transaction's timestamp (from PREPARE)
	waitSince uint64 // tick the current lock wait began
	wounded   bool   // a wound request for it was sent
	since     uint64 // tick the branch prepared (0 if replayed): its age in doubt
	// attempt is the transaction's attempt this branch belongs to (1-based).
	// A PREPARE of a later attempt replaces the branch (aborting it first if
	// it is prepared); messages of an earlier attempt are stale.
	attempt uint32
	// epoch is the epoch of the PREPARE that made the branch (on replay:
	// the epoch its PREPARED record names; 0 after a snapshot, which keeps
	// none). A prepared branch ignores an ABORT of an older epoch: it
	// comes from a coordinator incarnation before the one that prepared
	// it (a deposed leader of a replicated coordinator, or a message from
	// before a restart arriving late) and says nothing about this run.
	epoch uint64
}

// Participant is a participant's state machine for many concurrent
// branches, with strict two-phase locking. One driver goroutine owns it.
type Participant struct {
	cfg      ParticipantConfig
	res      AttemptResource
	locks    *lockmgr.Table
	started  bool
	restored bool // Restore saw at least one record
	now      uint64
	maxEpoch uint64
	branches map[string]*branch // waiting or prepared
	finished *txTable           // committed or aborted: the current generation
	older    []*txTable         // the earlier generations, oldest first, packed (see rotate)
	// olderTags filters the ids of older: a new id is not looked up in
	// each (filter.go). Rebuilt whenever older changes.
	olderTags tagFilter
	genStart  uint64 // tick the current generation began
	// forgot is set once a generation of finished branches was dropped:
	// from then on an unknown id may be a forgotten one.
	forgot    bool
	rotations uint64
	forgotten uint64 // finished branches dropped by this incarnation
	inDoubt   int
	timers    timers
	rd        Ready
	// heur holds the branches an operator decided heuristically
	// (heuristic.go); nil until the first.
	heur map[string]*heuristic
}

// NewParticipant returns a participant over res with no history. Replay the
// log with Restore, then call Start.
func NewParticipant(cfg ParticipantConfig, res Resource) (*Participant, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Deadlock == 0 {
		cfg.Deadlock = DeadlockDetect
	}
	if cfg.DetectEvery == 0 {
		cfg.DetectEvery = 5
	}
	if cfg.DetectAfter == 0 {
		cfg.DetectAfter = 5
	}
	return &Participant{
		cfg:      cfg,
		res:      AsAttemptResource(res),
		locks:    lockmgr.New(),
		branches: make(map[string]*branch),
		finished: newTxTable(),
	}, nil
}

// ID returns the participant's node name.
func (p *Participant) ID() string { return p.cfg.ID }

// InDoubt returns the number of prepared branches without a decision.
func (p *Participant) InDoubt() int { return p.inDoubt }

// InDoubtTxs returns the ids of the prepared branches, sorted.
func (p *Participant) InDoubtTxs() []string {
	var ids []string
	for id, b := range p.branches {
		if b.state == BranchPrepared {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Branch returns the state of tx's branch and whether it is known.
func (p *Participant) Branch(tx string) (BranchState, bool) {
	b := p.branchOf(tx)
	if b == nil {
		return 0, false
	}
	return b.state, true
}

// branchOf returns tx's branch: the live one (waiting or prepared) or, for a
// finished branch, a copy brought back from the finished table. Changes to
// a finished branch are kept by settle.
func (p *Participant) branchOf(tx string) *branch {
	if b := p.branches[tx]; b != nil {
		return b
	}
	h := p.finished.hash(tx) // every generation has the same seed
	v, reason, ok := p.finished.getH(tx, h)
	if !ok && p.olderTags.mayHave(tagOf(h)) {
		for i := len(p.older) - 1; i >= 0 && !ok; i-- { // newest first: a branch settled again is in a newer one
			v, reason, ok = p.older[i].getH(tx, h)
		}
	}
	if !ok {
		return nil
	}
	return &branch{state: BranchState(v.state), reason: reason, attempt: v.a, gen: v.b}
}

// settle files b, which is committed or aborted, in the finished table
// (its current generation): a participant remembers every branch it
// finished for at least Retention (a late PREPARE must get the same vote),
// and that table holds nothing the garbage collector has to trace.
func (p *Participant) settle(tx string, b *branch) {
	delete(p.branches, tx)
	p.finished.Put(tx, txVal{state: uint8(b.state), a: b.attempt, b: b.gen}, b.reason)
}

// Locks exposes the lock table (read-only use: wait-for edges, stats).
func (p *Participant) Locks() *lockmgr.Table { return p.locks }

// Restore applies one replayed log record, in log order, before Start.
// It re-applies prepared branches to the Resource (taking their locks
// again) and their decisions.
func (p *Participant) Restore(r Record) error {
	if p.started {
		return ErrStarted
	}
	p.restored = true
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s: %s", ErrBadRecord, p.cfg.ID, r, why)
	}
	// Only what each record's rules look at is looked up: the finished
	// tables (a hash and a probe of each generation) only where a
	// finished branch changes the outcome. A COMMITTED or a heuristic
	// decision needs a prepared branch, which is live, or fails the same
	// way without one; a PREPARED with Retention passes whether or not
	// the branch finished before (see forgotten below); an EVENT needs
	// nothing. Replay is mostly PREPARED and COMMITTED records of new
	// branches, so this spares a look-up per branch.
	var b *branch
	switch {
	case r.Type == RecEvent, r.Type == RecHeuristicMismatch:
	case r.Type == RecCommitted, r.Type == RecHeuristicCommitted, r.Type == RecHeuristicAborted,
		r.Type == RecPrepared && p.cfg.Retention > 0:
		b = p.branches[r.Tx]
	default:
		b = p.branchOf(r.Tx)
	}
	a := AttemptOf(r.Attempt)
	switch r.Type {
	case RecPrepared:
		// A later attempt may prepare after an earlier one aborted (its
		// ABORTED or VOTED_NO record comes first in the log).
		// With Retention, a finished branch may have been forgotten (its
		// generation dropped, which the log does not record) and a late
		// duplicate PREPARE of the same attempt prepared it again, as a new
		// branch (see forget): the log then holds its first decision and a
		// second PREPARED. Replay does what the machine did then.
		forgotten := p.cfg.Retention > 0 && b != nil && (b.state == BranchAborted || b.state == BranchCommitted)
		if b != nil && (b.state != BranchAborted || a <= b.attempt) && !forgotten {
			return bad(fmt.Sprintf("branch prepared twice (was %s at attempt %d)", b.state, b.attempt))
		}
		keys, err := p.res.Keys(r.Tx, r.Op)
		if err != nil {
			return bad("keys: " + err.Error())
		}
		granted, err := p.locks.Acquire(r.Tx, keys)
		if err != nil || !granted {
			return bad(fmt.Sprintf("locks not free on replay (granted=%v, err=%v)", granted, err))
		}
		if err := ReplayPrepare(p.res, r.Tx, a, r.Op); err != nil {
			return bad("prepare fails on replay: " + err.Error())
		}
		p.branches[r.Tx] = &branch{state: BranchPrepared, op: r.Op, attempt: a, epoch: r.Epoch}
		p.inDoubt++
		p.maxEpoch = max(p.maxEpoch, r.Epoch)
	case RecCommitted:
		if b == nil || b.state != BranchPrepared {
			return bad("COMMITTED without PREPARED")
		}
		if a != b.attempt {
			return bad(fmt.Sprintf("COMMITTED for attempt %d, but attempt %d is prepared", a, b.attempt))
		}
		p.res.CommitAttempt(r.Tx, a, b.op)
		p.finish(r.Tx, b, BranchCommitted)
	case RecAborted, RecVotedNo:
		switch {
		case b == nil:
			p.settle(r.Tx, &branch{state: BranchAborted, reason: r.Reason, attempt: a})
		case a < b.attempt:
			// Never logged by this machine (a stale ABORT is only an
			// event); harmless: an earlier attempt changes nothing now.
		case b.state == BranchPrepared:
			p.res.AbortAttempt(r.Tx, b.attempt, b.op)
			b.attempt = a
			p.finish(r.Tx, b, BranchAborted)
		case b.state == BranchAborted:
			b.attempt = a
			p.settle(r.Tx, b)
		case b.state == BranchCommitted && p.cfg.Retention > 0:
			// The machine never logs an ABORT of a branch it knows
			// committed (it refuses it, an event). With Retention the
			// branch was forgotten (which the log does not record) and a
			// late ABORT of it remembered as a new aborted branch, as for
			// any unknown one (stepAbort): the coordinator, past its own
			// window, answered a late duplicate vote with a presumed
			// abort. Replay does what the machine did then; the
			// Resource's committed changes stand.
			p.settle(r.Tx, &branch{state: BranchAborted, reason: r.Reason, attempt: a})
		case b.state == BranchCommitted:
			return bad("ABORTED after COMMITTED")
		}
	case RecHeuristicCommitted, RecHeuristicAborted, RecHeuristicMismatch:
		if why := p.restoreHeuristic(r, b); why != "" {
			return bad(why)
		}
	case RecEvent:
	default:
		return bad("not a participant record")
	}
	return nil
}

// finish moves a prepared branch to a final state and releases its locks.
// During normal operation, waiters granted by the release are prepared.
func (p *Participant) finish(tx string, b *branch, s BranchState) {
	if b.state == BranchPrepared {
		p.inDoubt--
	}
	b.state = s
	b.op = nil
	b.gen++
	p.settle(tx, b)
	granted := p.locks.Release(tx)
	if !p.started {
		if len(granted) > 0 {
			panic(fmt.Sprintf("twopc: %s: waiters during replay", p.cfg.ID)) // Restore never queues
		}
		return
	}
	for _, g := range granted {
		if w := p.branches[g]; w != nil && w.state == BranchWaiting {
			p.prepare(g, w)
		}
	}
}

// Start makes the participant serve: in-doubt branches ask the coordinator
// for their outcome at once.
func (p *Participant) Start() {
	if p.started {
		return
	}
	p.started = true
	if p.restored {
		// Back from a log: PREPAREs sent to the previous incarnation may
		// be lost. (A participant with an empty log has nothing to tell.)
		p.send(MsgRestarted, "", 0, 0, "")
	}
	for _, tx := range p.InDoubtTxs() {
		b := p.branches[tx]
		p.send(MsgInquire, tx, b.attempt, 0, "")
		// The coordinator may be restarting too: ask again soon, then back
		// off as usual.
		p.timers.add(p.now+max(1, p.cfg.InquireAfter/8), tx, timerInquire, b.gen)
	}
}

func (p *Participant) send(typ MsgType, tx string, attempt uint32, v Vote, reason string) {
	p.rd.Messages = append(p.rd.Messages, Message{
		Type: typ, From: p.cfg.ID, To: p.cfg.Coordinator, Tx: tx, Epoch: p.maxEpoch, Vote: v, Reason: reason, Attempt: attempt,
	})
}

// inquireOlder asks at once about every branch in doubt prepared under an
// epoch older than epoch, the epoch of a coordinator incarnation that has
// just spoken (a restarted coordinator, or a new leader of a replicated
// one): the incarnation that prepared them is gone, and the new one knows
// their outcome (or presumes abort) now, where the branches' own
// inquiries may be seconds away, backed off. Their timers stay as they
// are. Only a PREPARE this participant can read gets here (the epoch is
// raised by nothing else), so a forged message cannot make it chatter.
func (p *Participant) inquireOlder(epoch uint64) {
	for _, tx := range p.InDoubtTxs() {
		if b := p.branches[tx]; b.epoch < epoch {
			p.send(MsgInquire, tx, b.attempt, 0, "")
		}
	}
}

func (p *Participant) armInquire(tx string, b *branch) {
	d := backoff(p.cfg.InquireAfter, p.cfg.InquireMax, b.attempts, p.cfg.Rand)
	p.timers.add(p.now+d, tx, timerInquire, b.gen)
}

// Step processes one message from the coordinator.
func (p *Participant) Step(m Message) {
	if !p.started {
		return // not serving yet: the coordinator retries or times out
	}
	if m.Epoch > p.maxEpoch+MaxEpochStep {
		// No coordinator gets this far ahead in one step (an epoch is one
		// coordinator restart): believing it would fence off every real
		// PREPARE for good.
		// Not logged: whoever sends it must not grow the log.
		return
	}
	// Only a PREPARE this participant can read raises the epoch
	// (stepPrepare); a COMMIT or ABORT names a decision, and a forged one
	// must not fence off the real coordinator's PREPAREs.
	if p.heur != nil && p.stepHeuristic(m) {
		return
	}
	switch m.Type {
	case MsgPrepare:
		p.stepPrepare(m)
	case MsgCommit:
		p.stepCommit(m)
	case MsgAbort:
		p.stepAbort(m)
	default:
		// Not logged, as above.
	}
}

func (p *Participant) stepPrepare(m Message) {
	a := AttemptOf(m.Attempt)
	var gen uint32
	if b := p.branchOf(m.Tx); b != nil {
		switch {
		case a < b.attempt:
			// A late PREPARE of an attempt the coordinator has given up
			// (it only restarts after deciding ABORT): never prepare it.
			p.event(m.Tx, fmt.Sprintf("ignored PREPARE of attempt %d: attempt %d is here", a, b.attempt))
			return
		case a > b.attempt && b.state == BranchCommitted:
			p.event(m.Tx, fmt.Sprintf("refused PREPARE of attempt %d: attempt %d committed", a, b.attempt))
			return
		case a > b.attempt:
			// The coordinator aborted attempt b.attempt and restarted the
			// transaction: end the old branch here first.
			p.supersede(m.Tx, b, a)
			gen = b.gen + 1 // timers of the old branch must not fire on the new one
		default:
			switch b.state { // a duplicate PREPARE gets the same vote again
			case BranchPrepared:
				if bytes.Equal(b.op, m.Op) && m.Epoch > b.epoch {
					// A new coordinator incarnation runs the same
					// transaction: an ABORT of the old one no longer
					// applies here.
					b.epoch = m.Epoch
				}
				if !bytes.Equal(b.op, m.Op) {
					// The id was reused for another operation by a new
					// coordinator incarnation: never let one stand for the
					// other. The branch stays prepared until its decision.
					p.send(MsgVote, m.Tx, a, VoteNo, "transaction id reused with a different operation")
					return
				}
				p.send(MsgVote, m.Tx, a, VoteYes, "")
			case BranchCommitted:
				// A late copy of the PREPARE of the attempt that committed:
				// the decision is made, nobody waits for this vote. Not
				// answered: once the coordinator has forgotten the
				// transaction (past its retention window), a YES would be
				// taken for a transaction it never heard of and answered
				// with a remembered presumed abort, a second outcome for
				// the id.
			case BranchAborted:
				reason := b.reason
				if reason == "" {
					reason = "already aborted"
				}
				p.send(MsgVote, m.Tx, a, VoteNo, reason)
			}
			return // waiting: the vote comes when the locks do
		}
	}
	if m.Epoch < p.maxEpoch {
		p.voteNo(m.Tx, &branch{attempt: a, gen: gen}, fmt.Sprintf("stale epoch %d (current %d)", m.Epoch, p.maxEpoch))
		return
	}
	// The operation is checked before the epoch is believed: a PREPARE
	// this participant cannot even read changes nothing but its own vote.
	keys, err := p.res.Keys(m.Tx, m.Op)
	if err != nil {
		p.voteNo(m.Tx, &branch{attempt: a, gen: gen}, err.Error())
		return
	}
	newer := m.Epoch > p.maxEpoch
	p.maxEpoch = m.Epoch
	if newer {
		p.inquireOlder(m.Epoch)
	}
	b := &branch{state: BranchWaiting, op: m.Op, ts: m.TS, attempt: a, gen: gen, epoch: m.Epoch}
	p.branches[m.Tx] = b
	granted, err := p.locks.Acquire(m.Tx, keys)
	if err != nil {
		p.voteNo(m.Tx, b, err.Error())
		p.releaseWaiting(m.Tx)
		return
	}
	if granted {
		p.prepare(m.Tx, b)
		return
	}
	b.waitSince = p.now
	p.timers.add(p.now+p.cfg.LockTimeout, m.Tx, timerLock, b.gen)
	switch p.cfg.Deadlock {
	case DeadlockDetect:
		if cycle := p.locks.FindCycle(m.Tx); cycle != nil {
			p.breakLocal(cycle)
		}
	case DeadlockWoundWait:
		p.woundYounger()
	}
}

// supersede ends branch b of tx because PREPARE of a later attempt arrived.
// A waiting branch leaves the lock queues (nothing of it was logged); a
// prepared one, whose attempt the coordinator decided ABORT for before it
// restarted the transaction, is aborted as if that ABORT had arrived:
// logged, undone, locks released. Waiters granted by the release are
// prepared before the new attempt asks for its locks, so the new attempt
// queues behind them.
func (p *Participant) supersede(tx string, b *branch, next uint32) {
	reason := fmt.Sprintf("attempt %d superseded by attempt %d", b.attempt, next)
	switch b.state {
	case BranchWaiting:
		b.state = BranchAborted
		b.gen++
		p.settle(tx, b)
		p.event(tx, reason)
		p.releaseWaiting(tx)
	case BranchPrepared:
		p.res.AbortAttempt(tx, b.attempt, b.op)
		b.reason = reason
		p.rd.Records = append(p.rd.Records, Record{Type: RecAborted, Tx: tx, Reason: reason, Attempt: b.attempt})
		p.finish(tx, b, BranchAborted)
	}
}

// ts is the timestamp of a branch here (0 if unknown: counts as oldest).
func (p *Participant) ts(tx string) uint64 {
	if b := p.branches[tx]; b != nil {
		return b.ts
	}
	return 0
}

// breakLocal breaks a local cycle: its youngest branch votes NO. Every
// branch on a local cycle is waiting here, so none has voted YES here.
func (p *Participant) breakLocal(cycle []string) {
	victim := lockmgr.Victim(cycle, p.ts)
	b := p.branches[victim]
	if b == nil || b.state != BranchWaiting {
		panic(fmt.Sprintf("twopc: %s: local deadlock victim %s is not waiting", p.cfg.ID, victim)) // lockmgr invariant
	}
	p.voteNo(victim, b, CycleReason(cycle, victim, true))
	p.releaseWaiting(victim)
}

// chainEdges returns the holder edges plus, in every queue, an edge from
// each waiter to the one just ahead of it: linear in the waiters, and with
// the same reachability as every queue-ahead edge, which a global cycle
// may need (a waiter waits for those ahead of it too).
func (p *Participant) chainEdges(holder []lockmgr.Edge) []lockmgr.Edge {
	out := slices.Clone(holder)
	seen := map[string]bool{}
	for _, e := range holder {
		if seen[e.Key] {
			continue
		}
		seen[e.Key] = true
		q := p.locks.Queue(e.Key)
		for i := 1; i < len(q); i++ {
			out = append(out, lockmgr.Edge{Waiter: q[i], Holder: q[i-1], Key: e.Key, Ahead: true})
		}
	}
	return out
}

func (p *Participant) waitingAll(txs []string) bool {
	for _, tx := range txs {
		if b := p.branches[tx]; b == nil || b.state != BranchWaiting {
			return false
		}
	}
	return true
}

// woundYounger asks the coordinator to abort every transaction that an
// older one waits for (wound-wait). Only the coordinator may abort it: it
// may have voted YES here or elsewhere.
//
// Holder edges suffice: on any cycle, the oldest member waits (as every
// waiter does) for the holder of its key, which is on the cycle too (a run
// of queue-ahead edges ends at that holder) and younger, so it is wounded.
func (p *Participant) woundYounger() {
	for _, e := range p.locks.AppendEdges(nil, false) {
		w, h := p.branches[e.Waiter], p.branches[e.Holder]
		if w == nil || h == nil || h.wounded || w.ts == 0 || h.ts <= w.ts {
			continue
		}
		if h.state != BranchWaiting && h.state != BranchPrepared {
			continue
		}
		h.wounded = true
		p.rd.Messages = append(p.rd.Messages, Message{
			Type: MsgWound, From: p.cfg.ID, To: p.cfg.Coordinator, Tx: e.Holder, Epoch: p.maxEpoch, Attempt: h.attempt,
			Reason: fmt.Sprintf("deadlock: wounded by older %s waiting for %s", e.Waiter, e.Key),
		})
	}
}

// detect runs every DetectEvery ticks while branches wait for locks.
func (p *Participant) detect() {
	_, waiting := p.locks.Len()
	if waiting == 0 {
		return
	}
	switch p.cfg.Deadlock {
	case DeadlockWoundWait:
		p.woundYounger()
	case DeadlockDetect:
		// Locally, holder edges find every cycle (lockmgr.FindCycle).
		edges := p.locks.AppendEdges(nil, false)
		for round := 0; round < 64; round++ {
			cycles := lockmgr.FindCycles(edges)
			if len(cycles) == 0 {
				break
			}
			for _, c := range cycles {
				if p.waitingAll(c) {
					p.breakLocal(c)
				}
			}
			edges = p.locks.AppendEdges(edges[:0], false)
		}
		edges = p.chainEdges(edges)
		var waits []Wait
		old := false
		for _, e := range edges {
			w := p.branches[e.Waiter]
			if w == nil || w.state != BranchWaiting {
				continue
			}
			age := p.now - w.waitSince
			old = old || age >= p.cfg.DetectAfter
			waits = append(waits, Wait{Waiter: e.Waiter, Holder: e.Holder, Age: age})
		}
		if old {
			p.rd.Messages = append(p.rd.Messages, Message{
				Type: MsgWaits, From: p.cfg.ID, To: p.cfg.Coordinator, Epoch: p.maxEpoch, Waits: waits,
			})
		}
	}
}

// prepare runs the business check of a branch that holds its locks.
func (p *Participant) prepare(tx string, b *branch) {
	if err := p.res.PrepareAttempt(tx, b.attempt, b.op); err != nil {
		p.voteNo(tx, b, err.Error())
		p.releaseWaiting(tx)
		return
	}
	b.state = BranchPrepared
	b.gen++
	b.since = p.now
	p.inDoubt++
	p.rd.Records = append(p.rd.Records, Record{Type: RecPrepared, Tx: tx, Epoch: p.maxEpoch, Op: b.op, Force: true, Attempt: b.attempt})
	p.send(MsgVote, tx, b.attempt, VoteYes, "")
	p.armInquire(tx, b)
}

// releaseWaiting releases the locks of a branch that never prepared and
// prepares whoever that unblocks.
func (p *Participant) releaseWaiting(tx string) {
	for _, g := range p.locks.Release(tx) {
		if w := p.branches[g]; w != nil && w.state == BranchWaiting {
			p.prepare(g, w)
		}
	}
}

func (p *Participant) voteNo(tx string, b *branch, reason string) {
	b.state = BranchAborted
	b.reason = reason
	b.op = nil
	b.gen++
	p.settle(tx, b)
	p.rd.Records = append(p.rd.Records, Record{Type: RecVotedNo, Tx: tx, Reason: reason, Attempt: b.attempt})
	p.send(MsgVote, tx, b.attempt, VoteNo, reason)
}

func (p *Participant) stepCommit(m Message) {
	a := AttemptOf(m.Attempt)
	b := p.branchOf(m.Tx)
	switch {
	case b != nil && b.attempt != a:
		// Only the attempt that voted YES here can commit here; a COMMIT
		// naming another one is a protocol violation: never apply it.
		p.event(m.Tx, fmt.Sprintf("refused COMMIT of attempt %d: attempt %d is %s here", a, b.attempt, b.state))
	case b != nil && b.state == BranchPrepared:
		op := b.op
		p.res.CommitAttempt(m.Tx, a, op)
		// Forced before the ACK leaves: the ACK lets the coordinator END
		// the transaction and, once its outcome leaves the retention
		// window, forget it; an in-doubt branch asking after that would be
		// answered with a presumed ABORT.
		p.rd.Records = append(p.rd.Records, Record{Type: RecCommitted, Tx: m.Tx, Attempt: a, Force: true})
		p.finish(m.Tx, b, BranchCommitted)
		p.send(MsgAck, m.Tx, a, 0, "")
	case b != nil && b.state == BranchCommitted:
		p.send(MsgAck, m.Tx, a, 0, "") // duplicate COMMIT: ACK again
	case b == nil && p.forgot:
		// An unknown branch once generations were dropped: most likely a
		// committed branch forgotten after Retention, its COMMIT resent
		// because an ACK was lost. ACK it without applying anything. Safe:
		// the coordinator sends COMMIT of an attempt only after this
		// participant voted YES for it, which it did only after forcing
		// PREPARED; a prepared branch is never forgotten (only finished
		// ones are, from the table and never from branches), and a
		// finished branch of a committed attempt can only have finished
		// committed (ABORT of a committed attempt is never sent), with
		// COMMITTED forced before its first ACK and carried out long
		// before its generation was dropped (every Ready is carried out
		// before the next tick). So the change is durable here, and
		// applying it again is what must not happen.
		p.event(m.Tx, "ACKed COMMIT for a forgotten branch (past its retention)")
		p.send(MsgAck, m.Tx, a, 0, "")
	default:
		// COMMIT for a branch that never voted YES: a protocol violation
		// by the sender. Refuse it loudly; never apply it.
		state := "unknown"
		if b != nil {
			state = b.state.String()
		}
		p.event(m.Tx, "refused COMMIT for a branch that is "+state)
	}
}

// stepAbort applies an ABORT of attempt a. It ends the branch if the
// branch's attempt is a or earlier (the coordinator decided ABORT for a only
// after every earlier attempt was aborted); an ABORT of an earlier attempt
// than the branch's is stale and changes nothing.
func (p *Participant) stepAbort(m Message) {
	a := AttemptOf(m.Attempt)
	b := p.branchOf(m.Tx)
	reason := m.Reason
	if reason == "" {
		reason = "aborted by coordinator"
	}
	switch {
	case b == nil:
		// Remember it, so that a late PREPARE votes NO (no hanging branch).
		p.settle(m.Tx, &branch{state: BranchAborted, reason: reason, attempt: a})
		p.rd.Records = append(p.rd.Records, Record{Type: RecAborted, Tx: m.Tx, Reason: reason, Attempt: a})
	case a < b.attempt:
		p.event(m.Tx, fmt.Sprintf("ignored ABORT of attempt %d: attempt %d is %s here", a, b.attempt, b.state))
	case b.state == BranchWaiting:
		b.state = BranchAborted
		b.reason = reason
		b.op = nil
		b.gen++
		b.attempt = a
		p.settle(m.Tx, b)
		p.rd.Records = append(p.rd.Records, Record{Type: RecAborted, Tx: m.Tx, Reason: reason, Attempt: a})
		p.releaseWaiting(m.Tx)
	case b.state == BranchPrepared && m.Epoch < b.epoch:
		p.event(m.Tx, fmt.Sprintf("ignored ABORT of epoch %d: prepared under epoch %d", m.Epoch, b.epoch))
	case b.state == BranchPrepared:
		p.res.AbortAttempt(m.Tx, b.attempt, b.op)
		b.reason = reason
		b.attempt = a
		p.rd.Records = append(p.rd.Records, Record{Type: RecAborted, Tx: m.Tx, Reason: reason, Attempt: a})
		p.finish(m.Tx, b, BranchAborted)
	case b.state == BranchAborted && a > b.attempt:
		// A later attempt aborted before its PREPARE came here: remember
		// it, so that its late PREPARE votes NO too.
		b.attempt = a
		b.reason = reason
		p.settle(m.Tx, b)
		p.rd.Records = append(p.rd.Records, Record{Type: RecAborted, Tx: m.Tx, Reason: reason, Attempt: a})
	case b.state == BranchCommitted:
		p.event(m.Tx, "refused ABORT for a committed branch")
	}
}

func (p *Participant) event(tx, what string) {
	p.rd.Records = append(p.rd.Records, Record{Type: RecEvent, Tx: tx, Reason: what})
}

// Tick advances time by one tick: lock waits past LockTimeout vote NO, and
// in-doubt branches ask the coordinator again.
func (p *Participant) Tick() {
	p.now++
	if !p.started {
		return
	}
	if p.cfg.Retention > 0 && p.now-p.genStart >= GenerationTicks(p.cfg.Retention) {
		p.rotate()
	}
	if p.cfg.Deadlock != DeadlockTimeout && p.now%p.cfg.DetectEvery == 0 {
		p.detect()
	}
	if p.heur != nil && p.now%p.cfg.InquireAfter == 0 {
		p.inquireHeuristics()
	}
	for {
		tm, ok := p.timers.pop(p.now)
		if !ok {
			return
		}
		b := p.branches[tm.tx]
		if b == nil || b.gen != tm.gen {
			continue
		}
		switch {
		case tm.kind == timerLock && b.state == BranchWaiting:
			reason := fmt.Sprintf("lock timeout after %d ticks", p.cfg.LockTimeout)
			if key, ok := p.locks.Waiting(tm.tx); ok {
				holder, _ := p.locks.Holder(key)
				reason = fmt.Sprintf("lock timeout after %d ticks waiting for %s held by %s", p.cfg.LockTimeout, key, holder)
			}
			p.voteNo(tm.tx, b, reason)
			p.releaseWaiting(tm.tx)
		case tm.kind == timerInquire && b.state == BranchPrepared:
			b.attempts++
			p.send(MsgInquire, tm.tx, b.attempt, 0, "")
			p.armInquire(tm.tx, b)
		}
	}
}

// Generations is how many generations of finished transactions a machine
// with a retention keeps: a coordinator's outcomes (retain.go), a
// participant's finished branches. The current one takes every
// transaction that finishes, the earlier ones are packed (read-only). A
// generation takes new ones for GenerationTicks(retention) ticks; then the
// oldest is dropped (once there are that many) and a new one begins. So a
// transaction is forgotten Generations spans after its generation began:
// at least the retention after it finished (the generations after its own
// span Generations-1 spans, which cover the retention), less than
// Generations spans after.
//
// Why that many: what a machine holds swings by one generation's worth at
// each drop. With two generations it held between one and two retentions'
// worth, and its memory swung by a third of itself every retention; with
// eight it holds between one retention's worth and 8/7 of it. A lookup of
// an id no generation holds (every new transaction) probes all eight,
// about 3 slots each.
const Generations = 8

// GenerationTicks is how long a generation takes new transactions, for a
// retention (rounded up, so that Generations-1 spans cover it).
func GenerationTicks(retention uint64) uint64 {
	const n = Generations - 1
	return max(1, retention/n+min(1, retention%n))
}

// rotate starts a new generation of finished branches and drops the
// oldest once Generations are kept: a branch is forgotten at
// least Retention, less than Generations×GenerationTicks(Retention)
// ticks after it finished.
//
// Why forgetting is safe:
//
//   - Only finished branches are forgotten, never a prepared one, and a
//     finished branch's record was carried out (made durable if it was
//     forced, as COMMITTED is) before the tick that rotates.
//   - A COMMIT resent for a forgotten branch is ACKed (stepCommit): it can
//     only be for a branch that voted YES and committed.
//   - An ABORT for a forgotten branch is remembered as a new aborted one,
//     as for any unknown branch (presumed abort needs no ACK).
//   - A duplicate PREPARE arriving after the branch was forgotten prepares
//     it again and votes YES. With Retention at least twice the
//     coordinator's, it arrives at least 2×(the coordinator's Retention)
//     after the outcome, when the coordinator has dropped that outcome:
//     it answers the YES with ABORT (expired, or presumed abort for an
//     unknown id), so the phantom branch is undone, never applied twice.
//     This assumes the two clocks run alike (both count running ticks; a
//     coordinator loop starved of CPU stretches its window) and that no
//     message is delayed longer than the window.
func (p *Participant) rotate() {
	for len(p.older) >= Generations-1 { // more only from a snapshot of another build
		drop := p.older[0]
		if drop.Len() > 0 {
			p.forgot = true
			p.forgotten += uint64(drop.Len())
		}
		p.older[0] = nil
		p.older = append(p.older[:0], p.older[1:]...)
	}
	p.finished.pack()
	p.older = append(p.older, p.finished)
	p.olderTags = newTagFilter(p.older)
	p.finished = newTxTableSeed(p.finished.seed)
	p.genStart = p.now
	p.rotations++
}

// FinishedStats returns the number of finished branches remembered (every
// generation) and the generations started so far by this incarnation.
func (p *Participant) FinishedStats() (remembered int, rotations uint64) {
	n := p.finished.Len()
	for _, t := range p.older {
		n += t.Len()
	}
	return n, p.rotations
}

// Forgotten returns how many finished branches this incarnation dropped
// (past Retention).
func (p *Participant) Forgotten() uint64 { return p.forgotten }

// HasReady reports whether Ready has anything to hand out.
func (p *Participant) HasReady() bool { return !p.rd.Empty() }

// Ready returns the work accumulated since the last Advance. Its slices
// are reused: they are valid only until the next Advance.
func (p *Participant) Ready() Ready { return p.rd }

// Advance tells the machine the last Ready was carried out.
func (p *Participant) Advance() { p.rd.reset() }
