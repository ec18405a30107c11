// Package pgpart makes a PostgreSQL database a dtx participant, through
// PostgreSQL's own two-phase commit (PREPARE TRANSACTION). A user writes
// the branch's work (Work: its lock keys, and what it does in an open
// transaction); the adapter is the participant SDK's Resource, and the SDK
// runs the participant machine around it exactly as for any service, so
// the coordinator and the protocol are unchanged.
//
// # Mapping
//
//   - PREPARE: BEGIN; the work (row locks with SELECT … FOR UPDATE, checks,
//     writes); then, in one round trip, an INSERT of the branch's row into
//     dtx_branches and PREPARE TRANSACTION '<gid>'. The machine logs its
//     PREPARED record and votes YES only after that returned.
//   - business NO (the work's error), or any failure: ROLLBACK, vote NO. A
//     failure after PREPARE TRANSACTION was sent (a lost connection) is a
//     NO too, and the gid is rolled back if it exists, at once or by the
//     next sweep.
//   - COMMIT: COMMIT PREPARED '<gid>'. ABORT: ROLLBACK PREPARED '<gid>'.
//
// # Gids
//
// A gid is dtx1.<owner>.<attempt>.<tx> (GID): owner is a tag of the
// coordinator group, the participant's name and the database (OwnerTag;
// dtx_owners maps it back; gids are unique per server, not per database), attempt is the transaction's attempt (a deadlock victim is
// restarted as attempt k+1, whose branch is a new PostgreSQL transaction),
// and tx is the transaction id, verbatim if it is made of A-Z a-z 0-9 _ : -
// and base64url otherwise. Ids are any UTF-8 up to 128 bytes; the gid is
// at most 197 bytes and made only of characters that need no quoting, so
// the literal that PREPARE TRANSACTION needs (it takes no bind parameter)
// cannot be broken out of. Several participants can share one database:
// each one sees only its own owner's gids.
//
// # Idempotent decisions, and "unknown gid"
//
// COMMIT PREPARED or ROLLBACK PREPARED of a gid that is not prepared fails
// with SQLSTATE 42704. The adapter reads that as "already done" — never as
// an error to retry — because of how a decision reaches it: the machine
// decides only a branch whose PREPARED record is in its log, and that
// record is written only after PREPARE TRANSACTION returned; so the gid
// existed, and only a COMMIT PREPARED or ROLLBACK PREPARED removes it. The
// adapter rolls a gid back only when the machine decided ABORT for that
// attempt, or when no YES vote for it was ever logged (below), and the
// machine never turns an aborted attempt into a committed one. A retry
// (the decision arrived twice, or the statement ran but its answer was
// lost, or the service crashed after it and before its COMMITTED record
// was durable) therefore finds the gid gone because it went the same way.
//
// "Never prepared" is a different case, and the adapter can tell it: the
// branch's row in dtx_branches is written inside the prepared transaction,
// so it exists if and only if the gid committed. When a gid is found gone,
// the adapter checks the row once: a mismatch (someone ran COMMIT PREPARED
// or ROLLBACK PREPARED by hand, or the database was restored from an older
// backup) is logged as a heuristic outcome and counted (Stats.Heuristic),
// not retried — retrying cannot change it.
//
// # Recovery, and the race with a PREPARE in flight
//
// At start (after the participant's log is replayed: Recoverer) and every
// SweepEvery, the adapter lists pg_prepared_xacts with its owner's prefix
// in its database and resolves each gid that no live branch claims:
//
//   - in the live set: the machine owns it (prepared, in doubt, or being
//     prepared right now). The machine asks the coordinator for the
//     outcome itself (INQUIRE; presumed abort: an unknown transaction is
//     answered ABORT) and applies it through COMMIT/ROLLBACK PREPARED.
//   - a pending decision (replayed from the log, or one whose statement
//     failed): applied.
//   - anything else: rolled back. Such a gid's YES vote never left: a YES
//     leaves only after the PREPARED record is durable, and every durable
//     PREPARED is replayed into the live set or, with its decision, into
//     the pending ones. This is the crash between PREPARE TRANSACTION and
//     the log's sync, and the lost answer of a PREPARE TRANSACTION that
//     voted NO. The coordinator cannot have committed the transaction
//     without that vote, so it is not asked.
//
// The race with a PREPARE in flight is closed by the live set: a branch's
// gid enters it (under the adapter's mutex) before its BEGIN, and leaves
// it only once the branch is decided. A sweep decides about a gid and
// rolls it back while holding the same mutex, so no gid it rolls back was
// live at any moment between its check and its rollback. A gid listed by
// the sweep but decided and resolved before the check is gone by then: the
// rollback finds nothing (and the same gid is never prepared twice by one
// life of the machine, which remembers every branch it finished). During
// the replay of the log nothing is known yet, and sweeps do nothing; a new
// incarnation (after a crash of the service) starts only between sweeps.
//
// One process at a time may resolve an owner's gids: the adapter holds a
// session-level advisory lock for its owner for as long as it runs (Open
// waits up to OwnerWait for a killed predecessor's session to go), and
// sweeps run their statements on that session, so a statement that ran
// proves the lock was held — another process could otherwise roll back
// this one's live branches. A second process with the same group and
// participant on the same database is refused.
//
// Serving before a successful sweep (PostgreSQL down at start) is safe: a
// left-over gid holds its rows' locks, so a new branch on them waits for
// lock_timeout and votes NO, and a branch that reuses its gid (the same
// attempt, PREPAREd again after a crash) fails PREPARE TRANSACTION and
// votes NO.
//
// # Is the participant's own log still needed?
//
// Yes, and it is kept: PostgreSQL durably holds the prepared transaction
// (PREPARE TRANSACTION and COMMIT PREPARED always flush its WAL, whatever
// synchronous_commit says), but not what the protocol needs besides: the
// branch's operation (the machine re-takes dtx's locks on replay and
// answers a duplicate PREPARE with the same vote only if the operation is
// the same), NO votes and aborts of transactions it never prepared (a late
// PREPARE must vote NO, not prepare a hanging branch), and the coordinator
// epochs it has seen. So the order is: PREPARE TRANSACTION (PostgreSQL
// fsync), then PREPARED in the participant's log (forced), then YES. The
// log's PREPARED is what makes a gid "ours and possibly voted YES";
// PostgreSQL is the store of the data and of the prepared state itself.
// COMMITTED is not forced (as for every participant: the coordinator
// remembers every outcome, and a branch that loses it asks again and is
// told COMMIT again, which finds the gid gone: "already done").
// The cost is two fsyncs per PREPARE (PostgreSQL's and the log's) and one
// per COMMIT (PostgreSQL's). Keeping the protocol records in PostgreSQL
// instead (a table written in the same transaction) would save the log's
// fsync; it is not done here.
//
// The participant's log must survive like any participant's: with it
// lost, the adapter would take every left-over gid for an orphan.
//
// # Deadlocks
//
// Work.Keys names the rows a branch changes, so branches of one
// participant queue in dtx's lock table, where the local and global
// deadlock detection (or wound-wait) sees them, and never wait for each
// other inside PostgreSQL. Row locks held by other clients of the
// database are invisible to dtx: a branch waits for them at most
// LockTimeout (PostgreSQL's lock_timeout), then votes NO; PostgreSQL's own
// detector breaks a cycle among sessions inside the database.
//
// # Where the time goes
//
// A branch's PREPARE runs on the participant's loop goroutine, one branch
// at a time per participant (the participant machine is single threaded):
// BEGIN, the work's statements, then INSERT + PREPARE TRANSACTION in one
// round trip (a PostgreSQL WAL flush), then the participant log's forced
// PREPARED (an fsync). Decisions (COMMIT PREPARED, ROLLBACK PREPARED: a
// WAL flush each) run on DecisionWorkers goroutines, so the loop goes on
// meanwhile and concurrent decisions share PostgreSQL's WAL flushes. The
// machine then logs COMMITTED (not forced) and ACKs before the statement
// is done; that is safe because the gid stays prepared until the statement
// runs: a crash before it leaves the gid prepared, and the restarted
// participant either replays COMMITTED (a pending decision the recovery
// sweep applies) or finds the branch in doubt and asks the coordinator,
// which remembers every outcome. A statement that fails is retried by the
// sweep. Rows of a decided branch stay locked until the statement runs: the
// next branch on them waits inside PostgreSQL for at most LockTimeout.
// Every statement is bounded by StatementTimeout. Flush waits for the
// decisions handed over so far (a reader of the rows after the
// transactions are quiet).
package pgpart
