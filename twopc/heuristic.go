package twopc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Heuristic decisions.
//
// A prepared branch may never decide on its own: it holds its locks until
// its coordinator says COMMIT or ABORT. When the coordinator is gone for
// good (its disk lost, its site burnt), an operator may decide the branch
// by hand, as XA resource managers allow: ForceOutcome commits or aborts
// it, logs a forced HEURISTIC_COMMITTED or HEURISTIC_ABORTED record and
// releases its locks. The branch is remembered as heuristic (Heuristics)
// for as long as the participant lives: the decision is the operator's,
// and nothing the protocol does later may hide it.
//
// If the coordinator comes back after all and sends its decision:
//
//   - the same outcome: nothing more happens (a COMMIT is ACKed);
//   - the other outcome: a heuristic mismatch, which dtx cannot repair
//     (the branch's change is made or undone, and the other branches did
//     the opposite). A HEURISTIC_MISMATCH record is forced, the mismatch is
//     counted and reported (Heuristics, HeuristicStats), and a COMMIT is
//     ACKed all the same, so that the coordinator can finish the
//     transaction instead of resending COMMIT forever. (An ABORT needs no
//     ACK under presumed abort.) Later copies of that decision change
//     nothing more.
//
// Until the decision arrives, the branch asks the coordinator for it every
// InquireAfter ticks, as an in-doubt branch does.
//
// Which messages are the decision about the heuristic branch: a COMMIT of
// its attempt; an ABORT of its attempt; and, for a branch heuristically
// committed, an ABORT of a later attempt too (the coordinator aborted the
// attempt that was committed here before it restarted the transaction).
// Every other message goes through the ordinary rules (a PREPARE of a
// later attempt after a heuristic abort starts a new branch as after any
// abort).

// HeuristicMismatchPrefix starts the Reason of the ACK a branch sends for a
// COMMIT that contradicts its heuristic abort; the coordinator logs it.
const HeuristicMismatchPrefix = "heuristic mismatch: "

// MaxHeuristicNote bounds the operator's note of a heuristic decision.
const MaxHeuristicNote = 512

// ErrNotInDoubt is returned by ForceOutcome for a branch that is not
// prepared and waiting for its decision.
var ErrNotInDoubt = errors.New("twopc: branch is not in doubt")

// heuristic is what a participant keeps of a branch decided by an operator.
type heuristic struct {
	attempt   uint32
	committed bool
	note      string
	// coord is the coordinator's decision once it arrived: VoteYes for
	// COMMIT, VoteNo for ABORT, 0 not yet. Only a mismatch is logged; an
	// agreement is known until the next restart.
	coord    Vote
	mismatch bool
}

// Heuristic describes a branch decided by an operator.
type Heuristic struct {
	Tx        string
	Attempt   uint32
	Committed bool   // the operator's outcome
	Note      string // the operator's note
	// Coordinator is the coordinator's decision once it arrived here
	// ("COMMIT" or "ABORT"), "" if none has (since the last restart,
	// unless it was a mismatch).
	Coordinator string
	// Mismatch: the coordinator decided the other outcome.
	Mismatch bool
}

// HeuristicStats counts heuristic decisions kept by a participant.
type HeuristicStats struct {
	Committed, Aborted, Mismatches uint64
}

// InDoubtBranch is a prepared branch waiting for its decision.
type InDoubtBranch struct {
	Tx      string
	Attempt uint32
	Epoch   uint64 // the highest coordinator epoch this participant has seen
	// Ticks is how long the branch has been prepared, in ticks (since the
	// restart, for a branch brought back from the log).
	Ticks uint64
	// Inquiries counts the times it asked the coordinator (since the restart).
	Inquiries int
}

// InDoubtBranches returns the prepared branches without a decision,
// sorted by id.
func (p *Participant) InDoubtBranches() []InDoubtBranch {
	out := make([]InDoubtBranch, 0, p.inDoubt)
	for _, tx := range p.InDoubtTxs() {
		b := p.branches[tx]
		out = append(out, InDoubtBranch{Tx: tx, Attempt: b.attempt, Epoch: p.maxEpoch, Ticks: p.now - b.since, Inquiries: b.attempts})
	}
	return out
}

// ForceOutcome decides the in-doubt branch of tx without its coordinator:
// the Resource commits (commit) or aborts it, a forced
// HEURISTIC_COMMITTED or HEURISTIC_ABORTED record with note is logged, and
// the branch's locks are released. The decision is durable once the Ready
// that carries the record has been carried out. Only a prepared branch
// without a decision can be forced (ErrNotInDoubt otherwise).
func (p *Participant) ForceOutcome(tx string, commit bool, note string) error {
	if !p.started {
		return ErrNotStarted
	}
	if len(note) > MaxHeuristicNote {
		return fmt.Errorf("twopc: heuristic note of %d bytes is over the limit of %d", len(note), MaxHeuristicNote)
	}
	b := p.branches[tx]
	if b == nil || b.state != BranchPrepared {
		state := "unknown"
		if bb := p.branchOf(tx); bb != nil {
			state = bb.state.String()
		}
		return fmt.Errorf("%w: %q is %s at %s; only a prepared branch without a decision can be decided by hand", ErrNotInDoubt, tx, state, p.cfg.ID)
	}
	typ := RecHeuristicAborted
	if commit {
		typ = RecHeuristicCommitted
	}
	p.rd.Records = append(p.rd.Records, Record{Type: typ, Tx: tx, Attempt: b.attempt, Reason: note, Force: true})
	p.applyHeuristic(tx, b, commit, note)
	return nil
}

// applyHeuristic carries out a heuristic decision on prepared branch b.
func (p *Participant) applyHeuristic(tx string, b *branch, commit bool, note string) {
	if p.heur == nil {
		p.heur = make(map[string]*heuristic)
	}
	p.heur[tx] = &heuristic{attempt: b.attempt, committed: commit, note: note}
	if commit {
		p.res.CommitAttempt(tx, b.attempt, b.op)
		p.finish(tx, b, BranchCommitted)
		return
	}
	p.res.AbortAttempt(tx, b.attempt, b.op)
	// A late duplicate PREPARE votes NO with this reason.
	b.reason = "heuristically aborted by an operator"
	p.finish(tx, b, BranchAborted)
}

// inquireHeuristics asks the coordinator for the decision of every
// heuristic branch that has not heard it (since the last restart: an
// agreement is not logged). Without it, a decision lost on the way would
// leave a mismatch unreported for good: the coordinator sends an ABORT
// once, and resends COMMIT only until the branch ACKs. The answer is
// true: a transaction that committed stays in flight at the coordinator
// until this branch ACKs, so it is never forgotten and presumed aborted.
func (p *Participant) inquireHeuristics() {
	for _, h := range p.Heuristics() {
		if h.Coordinator == "" {
			p.send(MsgInquire, h.Tx, h.Attempt, 0, "")
		}
	}
}

// stepHeuristic applies a coordinator's decision about a heuristic branch
// and reports whether m was one (see the rules above).
func (p *Participant) stepHeuristic(m Message) bool {
	h := p.heur[m.Tx]
	if h == nil {
		return false
	}
	a := AttemptOf(m.Attempt)
	switch {
	case m.Type == MsgCommit && a == h.attempt:
		reason := ""
		if !h.committed {
			p.mismatch(m.Tx, h, VoteYes, a)
			reason = HeuristicMismatchPrefix + mismatchReason(h, VoteYes, a)
		} else {
			h.coord = VoteYes
		}
		// ACKed either way: the coordinator must be able to END it. The
		// ACK of a mismatch says so, for the coordinator's log.
		p.send(MsgAck, m.Tx, a, 0, reason)
	case m.Type == MsgAbort && a == h.attempt && !h.committed:
		h.coord = VoteNo
	case m.Type == MsgAbort && a >= h.attempt && h.committed:
		p.mismatch(m.Tx, h, VoteNo, a)
	default:
		return false
	}
	return true
}

// mismatch records, once, that the coordinator decided v (VoteYes:
// COMMIT) for a branch decided the other way by hand.
func (p *Participant) mismatch(tx string, h *heuristic, v Vote, a uint32) {
	if h.mismatch {
		return // a copy of the decision already recorded
	}
	h.mismatch, h.coord = true, v
	p.rd.Records = append(p.rd.Records, Record{Type: RecHeuristicMismatch, Tx: tx, Attempt: a, Vote: v, Force: true,
		Reason: mismatchReason(h, v, a)})
}

func mismatchReason(h *heuristic, v Vote, a uint32) string {
	coord, here := "ABORT", "ABORTED"
	if v == VoteYes {
		coord = "COMMIT"
	}
	if h.committed {
		here = "COMMITTED"
	}
	return fmt.Sprintf("coordinator decided %s (attempt %d); attempt %d was heuristically %s here", coord, a, h.attempt, here)
}

// restoreHeuristic replays a heuristic record onto branch b (nil if
// unknown); it returns why the record does not fit, or "".
func (p *Participant) restoreHeuristic(r Record, b *branch) string {
	a := AttemptOf(r.Attempt)
	if r.Type == RecHeuristicMismatch {
		h := p.heur[r.Tx]
		if h == nil {
			return "HEURISTIC_MISMATCH without a heuristic decision"
		}
		h.mismatch, h.coord = true, r.Vote
		return ""
	}
	if b == nil || b.state != BranchPrepared || b.attempt != a {
		return fmt.Sprintf("heuristic decision for attempt %d of a branch that is not prepared at that attempt", a)
	}
	p.applyHeuristic(r.Tx, b, r.Type == RecHeuristicCommitted, r.Reason)
	return ""
}

// Heuristics returns the branches decided by an operator, sorted by id.
func (p *Participant) Heuristics() []Heuristic {
	out := make([]Heuristic, 0, len(p.heur))
	for tx, h := range p.heur {
		out = append(out, h.public(tx))
	}
	slices.SortFunc(out, func(a, b Heuristic) int {
		switch {
		case a.Tx < b.Tx:
			return -1
		case a.Tx > b.Tx:
			return 1
		}
		return 0
	})
	return out
}

// HeuristicOf returns tx's heuristic decision, if it has one.
func (p *Participant) HeuristicOf(tx string) (Heuristic, bool) {
	h := p.heur[tx]
	if h == nil {
		return Heuristic{}, false
	}
	return h.public(tx), true
}

func (h *heuristic) public(tx string) Heuristic {
	out := Heuristic{Tx: tx, Attempt: h.attempt, Committed: h.committed, Note: h.note, Mismatch: h.mismatch}
	switch h.coord {
	case VoteYes:
		out.Coordinator = "COMMIT"
	case VoteNo:
		out.Coordinator = "ABORT"
	}
	return out
}

// HeuristicStats counts the heuristic decisions and mismatches kept.
func (p *Participant) HeuristicStats() HeuristicStats {
	var s HeuristicStats
	for _, h := range p.heur {
		if h.committed {
			s.Committed++
		} else {
			s.Aborted++
		}
		if h.mismatch {
			s.Mismatches++
		}
	}
	return s
}

// appendHeuristics appends the snapshot section of heuristic decisions
// (only when there is one, so that a snapshot without any keeps the
// format of version 1):
//
//	count uvarint, then each: tx, attempt uvarint, flags byte (1 committed,
//	2 mismatch), coordinator's vote byte, note
func (p *Participant) appendHeuristics(b []byte) []byte {
	if len(p.heur) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(p.heur)))
	for _, h := range p.Heuristics() {
		b = appendString(b, h.Tx)
		b = binary.AppendUvarint(b, uint64(h.Attempt))
		var flags byte
		if h.Committed {
			flags |= 1
		}
		if h.Mismatch {
			flags |= 2
		}
		b = append(b, flags, byte(p.heur[h.Tx].coord))
		b = appendString(b, h.Note)
	}
	return b
}

// restoreHeuristics reads the section appendHeuristics wrote, if any.
func (p *Participant) restoreHeuristics(d *decoder) {
	if d.err != nil || len(d.b) == 0 {
		return
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > uint64(len(d.b))) { // written only when there is one
		d.fail("heuristic count %d does not fit the payload", n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		tx := d.string()
		a := d.uvarint()
		flags := d.byte()
		coord := Vote(d.byte())
		note := d.string()
		if d.err == nil && (flags > 3 || coord >= voteEnd || a > 1<<32-1) {
			d.fail("heuristic decision of %s: bad flags %d, vote %d or attempt %d", tx, flags, coord, a)
		}
		if d.err != nil {
			return
		}
		if p.heur == nil {
			p.heur = make(map[string]*heuristic)
		}
		p.heur[tx] = &heuristic{attempt: uint32(a), committed: flags&1 != 0, mismatch: flags&2 != 0, coord: coord, note: note}
	}
}
