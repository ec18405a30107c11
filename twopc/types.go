package twopc

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CoordinatorID is the node name of the coordinator on the transport.
const CoordinatorID = "coordinator"

// MsgType names a protocol message. The zero value is invalid.
type MsgType uint8

const (
	// MsgPrepare asks a participant to prepare its branch; it carries the
	// business operation (Op) and the coordinator's epoch.
	MsgPrepare MsgType = 1 + iota
	// MsgVote is a participant's answer to PREPARE (Vote, Reason).
	MsgVote
	// MsgCommit tells a participant the transaction committed.
	MsgCommit
	// MsgAbort tells a participant the transaction aborted.
	MsgAbort
	// MsgAck acknowledges a COMMIT (the branch's COMMITTED record is durable).
	MsgAck
	// MsgInquire is an in-doubt participant asking the coordinator for the
	// outcome (termination protocol). The answer is a MsgCommit or MsgAbort,
	// or nothing while the coordinator is still collecting votes.
	MsgInquire
	// MsgWaits reports a participant's local wait-for edges (Waits) to the
	// coordinator, for global deadlock detection.
	MsgWaits
	// MsgWound asks the coordinator to abort transaction Tx, younger than a
	// transaction waiting for its lock (wound-wait). The coordinator does so
	// only if Tx is still collecting votes.
	MsgWound
	// MsgRestarted tells the coordinator a participant has just come back
	// from its log: a PREPARE sent to it before may have been lost, so the
	// coordinator resends PREPARE for every transaction still waiting for
	// its vote, instead of letting them run into the prepare timeout.
	MsgRestarted
	msgTypeEnd
)

var msgTypeNames = [...]string{"", "PREPARE", "VOTE", "COMMIT", "ABORT", "ACK", "INQUIRE", "WAITS", "WOUND", "RESTARTED"}

func (t MsgType) String() string {
	if t == 0 || t >= msgTypeEnd {
		return fmt.Sprintf("MsgType(%d)", uint8(t))
	}
	return msgTypeNames[t]
}

// Vote is a participant's answer to PREPARE. The zero value is invalid.
type Vote uint8

const (
	// VoteYes: the branch is durably prepared and will commit if told to.
	VoteYes Vote = 1 + iota
	// VoteNo: the branch cannot commit; Reason says why. Nothing was forced.
	VoteNo
	// VoteReadOnly: the branch changed nothing and needs no second phase.
	VoteReadOnly
	voteEnd
)

var voteNames = [...]string{"", "YES", "NO", "READ_ONLY"}

func (v Vote) String() string {
	if v == 0 || v >= voteEnd {
		return fmt.Sprintf("Vote(%d)", uint8(v))
	}
	return voteNames[v]
}

// Message is one protocol message between the coordinator and a participant.
// Every message names its transaction and carries the coordinator's epoch.
type Message struct {
	Type   MsgType
	From   string
	To     string
	Tx     string
	Epoch  uint64
	Vote   Vote   // MsgVote only
	Reason string // MsgVote (NO), MsgAbort
	Op     []byte // MsgPrepare only: the business operation of this branch
	// TS is the transaction's timestamp (MsgPrepare): smaller is older.
	// Deadlock policies use it to pick the youngest victim.
	TS uint64
	// Waits are a participant's wait-for edges (MsgWaits only).
	Waits []Wait
	// Attempt numbers the run of the transaction a message is about
	// (PREPARE, VOTE, COMMIT, ABORT, ACK, INQUIRE, WOUND): a transaction
	// aborted as a deadlock victim is restarted by its coordinator as
	// attempt k+1, with the same id, timestamp and operations. 0 means 1
	// (messages of peers that predate attempts).
	Attempt uint32
	// Trace is the sender's trace context (a W3C traceparent), opaque to
	// the machines: the drivers set it on the messages they send and read
	// it on the ones they take, to link the spans of one transaction
	// across processes (package tracing). Empty when not traced.
	Trace []byte
}

// MaxEpochStep bounds how far ahead of the highest epoch a participant has
// seen a message's epoch may be. An epoch is one coordinator incarnation
// (one restart), so a real coordinator is never this far ahead; a message
// that is, is ignored rather than believed, since a believed epoch fences
// off every PREPARE of a lower one for good.
const MaxEpochStep = 1 << 20

// MaxTxIDBytes bounds a transaction id anywhere in the protocol.
const MaxTxIDBytes = 256

// ValidTxID checks a transaction id: 1 to MaxTxIDBytes bytes of UTF-8
// without control or invisible formatting characters.
func ValidTxID(tx string) error {
	if tx == "" || len(tx) > MaxTxIDBytes {
		return fmt.Errorf("%w: id must be 1 to %d bytes (got %d)", ErrInvalidTx, MaxTxIDBytes, len(tx))
	}
	if !utf8.ValidString(tx) {
		return fmt.Errorf("%w: id is not valid UTF-8", ErrInvalidTx)
	}
	for _, r := range tx {
		// Control and invisible formatting characters (bidi overrides,
		// line separators) have no place in an id and make logs lie.
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return fmt.Errorf("%w: id has a control or formatting character (%U)", ErrInvalidTx, r)
		}
	}
	return nil
}

// AttemptOf normalizes an attempt number: 0 (not set, or a record written
// before attempts existed) is the first attempt.
func AttemptOf(a uint32) uint32 { return max(a, 1) }

// DeadlockReasonPrefix starts every reason dtx gives for aborting a
// deadlock victim (a global cycle's victim, a wounded transaction, a local
// cycle's victim voting NO). A coordinator restarts such a transaction
// instead of reporting the abort, up to MaxAttempts.
const DeadlockReasonPrefix = "deadlock: "

// CycleReason is the reason given for aborting victim to break cycle (a
// wait-for cycle, its first transaction repeated at the end). local says
// that a participant found the cycle in its own lock table; otherwise the
// coordinator found it in the merged reports.
func CycleReason(cycle []string, victim string, local bool) string {
	where := "cycle "
	if local {
		where = "local cycle "
	}
	return DeadlockReasonPrefix + where + strings.Join(cycle, "->") + "; victim " + victim + " (youngest)"
}

// ParseCycleReason returns the cycle and the victim that a reason made by
// CycleReason names (it may have been extended, e.g. with the attempt),
// and false for any other reason. Checkers use it to hold every victim to
// the cycle it was chosen from.
func ParseCycleReason(reason string) (cycle []string, victim string, ok bool) {
	rest, ok := strings.CutPrefix(reason, DeadlockReasonPrefix)
	if !ok {
		return nil, "", false
	}
	rest = strings.TrimPrefix(rest, "local ")
	rest, ok = strings.CutPrefix(rest, "cycle ")
	if !ok {
		return nil, "", false
	}
	path, rest, ok := strings.Cut(rest, "; victim ")
	if !ok {
		return nil, "", false
	}
	victim, _, ok = strings.Cut(rest, " (youngest)")
	if !ok || path == "" || victim == "" {
		return nil, "", false
	}
	return strings.Split(path, "->"), victim, true
}

// Wait is one wait-for edge at a participant: Waiter waits for a lock that
// Holder holds, or is queued ahead of it for one. Age is how many ticks
// Waiter has been waiting.
type Wait struct {
	Waiter, Holder string
	Age            uint64
}

// DeadlockPolicy says how deadlocks between transactions are handled. The
// lock-wait timeout is always on, as the last resort. The zero value is
// invalid.
type DeadlockPolicy uint8

const (
	// DeadlockDetect: participants break local cycles at once (the youngest
	// waiting branch votes NO) and report their wait-for edges to the
	// coordinator, which merges them and aborts the youngest transaction of
	// every cycle it finds.
	DeadlockDetect DeadlockPolicy = 1 + iota
	// DeadlockWoundWait: an older transaction that waits for a younger one
	// asks the coordinator to abort (wound) the younger one; a younger one
	// waits. Cycles cannot form.
	DeadlockWoundWait
	// DeadlockTimeout: lock-wait timeouts only.
	DeadlockTimeout
	deadlockPolicyEnd
)

var policyNames = [...]string{"", "detect", "wound-wait", "timeout"}

func (p DeadlockPolicy) String() string {
	if p == 0 || p >= deadlockPolicyEnd {
		return fmt.Sprintf("DeadlockPolicy(%d)", uint8(p))
	}
	return policyNames[p]
}

// ParseDeadlockPolicy reads "detect", "wound-wait" or "timeout".
func ParseDeadlockPolicy(s string) (DeadlockPolicy, error) {
	for i := DeadlockPolicy(1); i < deadlockPolicyEnd; i++ {
		if policyNames[i] == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("twopc: unknown deadlock policy %q (want detect, wound-wait or timeout)", s)
}

func (m Message) String() string {
	s := fmt.Sprintf("%s %s->%s tx=%s epoch=%d", m.Type, m.From, m.To, m.Tx, m.Epoch)
	if m.Attempt > 1 {
		s += fmt.Sprintf(" attempt=%d", m.Attempt)
	}
	if m.Type == MsgVote {
		s += " vote=" + m.Vote.String()
	}
	if m.Reason != "" {
		s += fmt.Sprintf(" reason=%q", m.Reason)
	}
	return s
}

// RecType names a log record. The zero value is invalid. Coordinator and
// participant records share one numbering so that a log dump can name any
// record of any log.
type RecType uint8

const (
	// RecEpoch (coordinator, forced): a new incarnation of the coordinator.
	RecEpoch RecType = 1 + iota
	// RecBegin (coordinator): a transaction started; Nodes are its participants.
	RecBegin
	// RecVoted (coordinator, informational): Node voted Vote (Reason).
	RecVoted
	// RecCommit (coordinator, forced): the decision COMMIT; Nodes still owe an ACK.
	RecCommit
	// RecAbort (coordinator): the decision ABORT, with Reason; Nodes are told.
	RecAbort
	// RecAcked (coordinator, informational): Node acknowledged COMMIT.
	RecAcked
	// RecEnd (coordinator): every ACK is in; the transaction is finished.
	RecEnd
	// RecEvent (either side, informational): a timeout, retry or error.
	RecEvent
	// RecPrepared (participant, forced): the branch is prepared; Op is kept.
	RecPrepared
	// RecVotedNo (participant): the branch voted NO with Reason.
	RecVotedNo
	// RecCommitted (participant, forced): the branch committed.
	RecCommitted
	// RecAborted (participant): the branch aborted (or an ABORT arrived for
	// an unknown transaction, remembered so a late PREPARE votes NO).
	RecAborted
	// RecRestart (coordinator, forced): attempt Attempt of the transaction
	// was aborted as a deadlock victim (Reason; Nodes are told ABORT) and
	// attempt Attempt+1 starts, with the same timestamp and operations. No
	// outcome is reported for it.
	RecRestart
	// RecCheckpoint (coordinator): the outcome generations rotate (Attempt
	// 0; see CoordinatorConfig.Retention); Op carries unfinished
	// transactions (a long list continues in records with Attempt 1, 2,
	// ...), Epoch the current epoch. The log before the checkpoint two
	// rotations back is no longer needed.
	RecCheckpoint
	// RecHeuristicCommitted (participant, forced): an operator forced the
	// in-doubt branch of attempt Attempt to commit, without its
	// coordinator (heuristic.go); Reason is the operator's note.
	RecHeuristicCommitted
	// RecHeuristicAborted (participant, forced): the same, forced to abort.
	RecHeuristicAborted
	// RecHeuristicMismatch (participant, forced): the coordinator's
	// decision (Vote: YES for COMMIT, NO for ABORT) differs from the
	// heuristic one already applied; Reason says what happened.
	RecHeuristicMismatch
	recTypeEnd
)

var recTypeNames = [...]string{"", "EPOCH", "BEGIN", "VOTED", "COMMIT", "ABORT", "ACKED", "END", "EVENT",
	"PREPARED", "VOTED_NO", "COMMITTED", "ABORTED", "RESTART", "CHECKPOINT",
	"HEURISTIC_COMMITTED", "HEURISTIC_ABORTED", "HEURISTIC_MISMATCH"}

func (t RecType) String() string {
	if t == 0 || t >= recTypeEnd {
		return fmt.Sprintf("RecType(%d)", uint8(t))
	}
	return recTypeNames[t]
}

// Valid reports whether t is a known record type.
func (t RecType) Valid() bool { return t > 0 && t < recTypeEnd }

// Record is one log record of either machine.
type Record struct {
	Type   RecType
	Tx     string
	Node   string   // RecVoted, RecAcked: the participant
	Epoch  uint64   // RecEpoch: the new epoch; RecPrepared: the coordinator's epoch
	Vote   Vote     // RecVoted
	Reason string   // RecAbort, RecVotedNo, RecAborted, RecEvent, RecVoted(NO)
	Nodes  []string // RecBegin, RecCommit, RecAbort: participants
	Op     []byte   // RecPrepared: the business operation
	// Attempt is the attempt a record is about: RecVoted, RecCommit (the
	// attempt that committed), RecAbort, RecRestart (the attempt aborted),
	// and the participant's RecPrepared, RecVotedNo, RecCommitted,
	// RecAborted. 0 (records of codec version 1) means attempt 1.
	Attempt uint32
	// Force is not stored: it says the record must be durable before the
	// Messages and Outcomes of the same Ready may leave.
	Force bool
}

func (r Record) String() string {
	s := r.Type.String()
	if r.Tx != "" {
		s += " tx=" + r.Tx
	}
	if r.Node != "" {
		s += " node=" + r.Node
	}
	if r.Epoch != 0 {
		s += fmt.Sprintf(" epoch=%d", r.Epoch)
	}
	if r.Vote != 0 {
		s += " vote=" + r.Vote.String()
	}
	if r.Attempt != 0 {
		s += fmt.Sprintf(" attempt=%d", r.Attempt)
	}
	if len(r.Nodes) > 0 {
		s += fmt.Sprintf(" nodes=%v", r.Nodes)
	}
	if len(r.Op) > 0 {
		s += fmt.Sprintf(" op=%dB", len(r.Op))
	}
	if r.Reason != "" {
		s += fmt.Sprintf(" reason=%q", r.Reason)
	}
	return s
}

// Outcome is the coordinator's answer to a client about a transaction.
type Outcome struct {
	Tx        string
	Committed bool
	Reason    string // why it rolled back; empty when committed
	// Duplicate is set when the transaction id had been submitted before:
	// the outcome is the first submission's, and nothing ran twice.
	Duplicate bool
	// Recovered is set for outcomes decided while recovering from the log
	// (no client is waiting for them).
	Recovered bool
}

// Ready is the work a state machine hands to its driver.
//
// The driver must append Records to the log in order and, if MustSync
// reports true, make them durable, before it sends Messages or reports
// Outcomes. Then it calls Advance.
type Ready struct {
	Records  []Record
	Messages []Message
	Outcomes []Outcome
}

// MustSync reports whether the log must be synced before Messages and
// Outcomes leave: when a record is forced, and before any outcome is
// reported to a client (an answer is a promise: a resubmission after a crash
// must get the same answer).
func (rd *Ready) MustSync() bool {
	if len(rd.Outcomes) > 0 {
		return true
	}
	for i := range rd.Records {
		if rd.Records[i].Force {
			return true
		}
	}
	return false
}

// reset empties rd for reuse, keeping its buffers: a machine's Ready is
// valid only until the next Advance.
func (rd *Ready) reset() {
	clear(rd.Records)
	clear(rd.Messages)
	clear(rd.Outcomes)
	rd.Records, rd.Messages, rd.Outcomes = rd.Records[:0], rd.Messages[:0], rd.Outcomes[:0]
}

// Clone returns a copy of rd that stays valid after Advance.
func (rd Ready) Clone() Ready {
	return Ready{Records: slices.Clone(rd.Records), Messages: slices.Clone(rd.Messages), Outcomes: slices.Clone(rd.Outcomes)}
}

// Empty reports whether there is nothing to do.
func (rd *Ready) Empty() bool {
	return len(rd.Records) == 0 && len(rd.Messages) == 0 && len(rd.Outcomes) == 0
}

// Errors returned by the machines.
var (
	ErrNotStarted = errors.New("twopc: machine not started (call Start after Restore)")
	ErrStarted    = errors.New("twopc: Restore after Start")
	ErrBusy       = errors.New("twopc: too many transactions in flight")
	// ErrOutcomeExpired: the id was used, but its outcome is past the
	// retention window (CoordinatorConfig.Retention); it is not run again.
	ErrOutcomeExpired = errors.New("twopc: outcome expired: this transaction id was used and its outcome is past the retention window; it is not run again (use a new id)")
	ErrInvalidTx      = errors.New("twopc: invalid transaction")
	ErrBadRecord      = errors.New("twopc: record does not fit the log replayed so far")
	ErrInvariant      = errors.New("twopc: invariant violated")
	ErrUnknownNode    = errors.New("twopc: unknown participant")
)
