// Package mutant names the bugs that can be planted in the production
// driver (package node) and machines (package twopc) to show that the tests
// catch them. A set is carried by the instance it affects (node.Hooks,
// twopc.CoordinatorConfig): the zero set, which production always uses,
// plants nothing and costs one test of a word per Ready or per cycle found.
//
// The simulator (package sim) turns them on one at a time, and its tests
// check that the fault campaign catches each one.
package mutant

// Set is a set of planted bugs.
type Set uint32

const (
	// CommitBeforeLog: the COMMIT messages and the outcomes of a Ready that
	// holds a COMMIT record leave before its records are written.
	CommitBeforeLog Set = 1 << iota
	// VoteBeforePrepared: the votes of a Ready that holds a PREPARED record
	// leave before its records are written.
	VoteBeforePrepared
	// AckBeforeCommitted: the ACKs of a Ready that holds a COMMITTED record
	// leave before its records are written (caught once the coordinator
	// forgets outcomes: the branch that lost COMMITTED is told ABORT).
	AckBeforeCommitted
	// NoForce: the driver ignores the Force flag of records; only an
	// outcome still makes it sync.
	NoForce
	// ReplyUnforced: the driver syncs only for forced records, not before
	// it reports an outcome.
	ReplyUnforced
	// SkipCommitSync: the driver does not sync a Ready that holds a COMMIT
	// record at all (its records are appended unsynced).
	SkipCommitSync
	// ReplaySkipsCommit: replay does not hand COMMIT records to the machine.
	ReplaySkipsCommit
	// ReplayDropsLast: replay is off by one and never hands the machine the
	// last record of the log.
	ReplayDropsLast
	// OffCycleVictim: the coordinator's deadlock detector aborts the
	// youngest transaction of the whole wait-for graph it merged, which
	// need not be on the cycle it names.
	OffCycleVictim
	// ReplicaNoWait: a replicated coordinator's log (package replica)
	// returns from a forced append as soon as it proposed the records,
	// without waiting for the group to commit them: a leader acts on
	// decisions the group may never commit.
	ReplicaNoWait
)

// Has reports whether any bug of m is planted in s.
func (s Set) Has(m Set) bool { return s&m != 0 }
