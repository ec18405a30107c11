// Package twopc holds the pure state machines of dtx's two-phase commit
// protocol (presumed abort): the Coordinator and the Participant.
//
// Neither machine has goroutines, I/O or clocks, in the shape of
// go.etcd.io/raft. A driver feeds events in — Propose (a new transaction),
// Step (a message), Tick (one unit of time has passed) — and then collects
// what the machine wants done with Ready, and acknowledges it with Advance.
//
// # The one ordering rule
//
// A Ready holds Records to log, Messages to send and Outcomes to report.
// The driver must append Records to the log, in order, and — when
// Ready.MustSync says so — make them durable (fsync returned) BEFORE it sends
// any of the Messages or reports any of the Outcomes. This single rule is
// what implements "force before you speak" twice over: a participant's
// PREPARED record is durable before its YES vote leaves, and the
// coordinator's COMMIT record is durable before any COMMIT message or any
// reply to the client. Drivers process Readies one after the other, so a
// message in a later Ready can never overtake a record of an earlier one.
//
// # Time
//
// Time moves only when the driver calls Tick. Every timeout in the configs
// is counted in ticks; the driver decides how long a tick is.
//
// # Remembering
//
// Both machines remember the outcome of every transaction they have seen
// (idempotency: duplicates, late and reordered messages are answered from
// memory). After a restart, the driver replays the log into a fresh machine
// with Restore and then calls Start, which resumes unfinished work.
package twopc
