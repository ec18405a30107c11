// Package sim is dtx's deterministic fault simulation: it runs the
// coordinator and the three example services (inventory, payment, order)
// as the twopc machines under the production driver (package node),
// single-threaded, on one simulated clock, and tries to break atomicity.
//
// # One seed drives everything
//
// A run is a queue of events ordered by (simulated time, sequence number)
// and one seeded PCG. The seed picks the world (a few hot items and
// buyers), the workload (purchases of one or two items, resubmissions of
// the same transaction_id, business NO votes: unknown item or buyer,
// expired card, stock and money running out), the network (latency, drop,
// duplicate, delay that reorders, always shorter than half the
// coordinator's retention window, the model's bound on a message's age; a
// partition of one component from the rest that heals), the disks (each component's log is the real wal on its
// own wal.MemFS: fsync and write errors, loss of the unsynced tail, torn
// last records on power loss, small segments for rollovers) and the
// crashes. Each run also draws which of the configured fault kinds it
// enables and at what rates (swarm testing), from gentle to brutal, and a
// deadlock policy. The same seed and build replay the same run, event for
// event (Result.Hash is a hash of the trace).
//
// # The driver
//
// The simulator runs the production driver: node.Carrier carries out each
// Ready under the twopc ordering contract (append Ready.Records to the
// component's log, sync if Ready.MustSync, and only then send
// Ready.Messages and report Ready.Outcomes), and node.Recover brings a
// component back from its log. The simulator only steps the machines on
// its clock and cuts the carry path through the driver's hooks (node.Hooks)
// at its crash points: before the log, between the write and the fsync
// (the disk halts there: the machine loses power, a torn tail), after the
// sync and before any message, after some but not all messages (its
// transport sends a prefix and crashes). They are named after what they
// cut (Fault): the coordinator before and after its COMMIT is durable, in
// the middle of sending COMMIT (or ABORT), after all ACKs and before END; a
// participant before and after PREPARED or COMMITTED is durable. A failed
// fsync or write, armed on the MemFS before the append, crashes the
// component (never a retry). Components also crash between steps, several
// at once (storms), and during recovery itself: the disk halts at a random
// call while node.Recover opens and replays the log, or the first Ready
// after Start is cut. A crash is a process crash (the page cache survives)
// or a power loss (only synced data survives, or a torn part of the rest).
//
// Recovery is the production recipe, node.Recover: wal.Open on the crashed
// disk (which cuts a torn tail), a fresh Resource from the service's New,
// the log replayed into a fresh machine with Restore, then Start. A
// participant first loads its newest valid snapshot and replays only the
// records after it (node.RecoverAfter).
//
// Bounded state: in most runs the coordinator forgets outcomes after a
// retention drawn per run (some very short, so that a branch back from a
// long crash asks about a forgotten transaction), checkpoints and compacts
// its log; participants forget finished branches after twice that
// retention (a resent COMMIT for a forgotten branch is ACKed; the campaign
// reports how many were forgotten), snapshot every few ticks and compact
// their logs, and move the committed entries their stores hold to their
// ledger files between snapshots. The faults crash.snapshot,
// crash.compact, crash.ledger-flush and disk.snapshot-damage cut those
// steps (sim/snapshot.go).
//
// A replicated coordinator (Config.Replicas 3 or 5; replicas.go): the
// coordinator is a raft group of stepped replica.Replicas, each a
// component with its own disk and raft log and every fault a component
// gets; raft messages cross the faulty network, partitions often isolate
// the leader, and faults of the raft logs' disks are armed at random
// moments. The leader's machine is carried by node.Carrier on the
// leader's replica.Log, one coroutine per carry (iter.Pull) so that an
// append waiting for the group yields to the event loop. Raft's election
// randomness (crypto/rand) is neutralised and replaced by a seeded drift
// of each replica's ticks, so a replicated run replays event for event
// too.
//
// Clients submit each transaction, time out and resubmit the same id
// while the coordinator is down or silent, and sometimes resubmit after an
// answer, always within the retention window (a timeout of at most half of
// it, extra resubmissions at most a quarter apart). A resubmission that
// kept retrying while the coordinator was down can reach it later than
// that: refused as "outcome expired" more than the window after the id's
// outcome, it is counted (Result.ExpiredRefusals); refused sooner, or run
// again, it is a violation.
//
// # Checkers
//
// Faults stop at Config.FaultTicks; everything heals and restarts. Then,
// on every run:
//
//   - liveness: within Config.LivenessTicks every client has an answer, the
//     coordinator has nothing in flight and no participant has a branch in
//     doubt (and no tentative change is left);
//   - atomicity: every transaction is committed at all three services or
//     at none, the coordinator agrees, and what was applied is what the
//     client asked;
//   - no lost acknowledgement: every transaction a client heard COMMITTED
//     is in the final state, every ROLLED_BACK one is not, and a client
//     never hears two different outcomes for one id;
//   - no duplicate effect: a transaction id never runs twice (a second
//     answer is marked duplicate), a branch commits at most once per
//     incarnation and is never committed unprepared;
//   - conservation: each service's Check (stock and money add up, nothing
//     negative), after every recovery and at the end, and across services
//     (sold and captured equal what the committed orders say);
//   - replay: each component's log, made durable, replays twice into fresh
//     machines to the same state, equal to the live one;
//   - linearizability: each transaction id is a write-once register; the
//     answered submissions and the final state of the services are checked
//     with porcupine (linear.go);
//   - deadlock victims: every victim of a wait-for cycle (found by the
//     coordinator or by a participant in its own lock table) is on the
//     cycle its reason names, and is the transaction aborted.
//
// A panic of the code under test is a violation too. Every violation
// carries the seed that reproduces it: `dtx chaos --seed S --runs 1`
// (with --trace for the event log), or `go test ./sim -run TestCampaign
// -seed S`.
//
// # Mutants
//
// Config.Mutant plants a bug in the production code (package mutant: a
// switch in node's carry and replay paths or in the coordinator machine,
// off in production) to show that the campaign catches it: COMMIT sent
// before it is logged, YES sent before PREPARED is durable, the Force flag
// ignored, client answers not synced, the sync of a COMMIT skipped, COMMIT
// records skipped on recovery, the last record of a log dropped on replay,
// a deadlock victim chosen off the cycle it names, an ACK sent before
// COMMITTED is durable (caught once the coordinator has forgotten the
// outcome: the branch that lost COMMITTED is told ABORT).
package sim
