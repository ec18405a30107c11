package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/twopc"
)

// Fault is one kind of fault the simulator injects (and counts). The zero
// value is invalid.
type Fault uint8

const (
	// FaultDrop: a message is lost.
	FaultDrop Fault = 1 + iota
	// FaultDuplicate: a message is delivered twice (each copy with its own
	// delay, so the copies may also be reordered).
	FaultDuplicate
	// FaultDelay: a message is held back well past the normal latency,
	// which reorders it behind later ones.
	FaultDelay
	// FaultPartition: one component is cut off from all the others for a
	// while, then the link heals.
	FaultPartition
	// FaultFsyncError: an fsync fails; the component must crash (never
	// retry) and recover from what its disk kept.
	FaultFsyncError
	// FaultWriteError: a write to the log fails; the component crashes.
	FaultWriteError
	// FaultTornTail: the component's machine loses power between a log
	// write and its fsync, keeping a torn part of the unsynced tail.
	FaultTornTail
	// FaultLoseUnsynced: a crash loses log records that were appended but
	// not yet synced.
	FaultLoseUnsynced
	// FaultPowerLoss: a crash takes the machine down (the page cache is
	// lost), not only the process.
	FaultPowerLoss
	// FaultCrashRandom: a component crashes between two steps.
	FaultCrashRandom
	// FaultCrashStorm: two or more components crash at the same moment.
	FaultCrashStorm
	// The named crash points, where the driver stops in the middle of
	// carrying out a Ready.
	CrashCoordBeforeCommitDurable // coordinator: COMMIT record not yet durable
	CrashCoordAfterCommitDurable  // coordinator: COMMIT durable, nothing sent
	CrashCoordMidCommitSend       // coordinator: some but not all COMMIT messages sent
	CrashCoordAfterAcksBeforeEnd  // coordinator: every ACK in, END not durable
	CrashCoordMidAbortSend        // coordinator: ABORT decided, some ABORTs sent
	CrashPartBeforePreparedDurable
	CrashPartAfterPreparedDurable // participant: PREPARED durable, vote not sent
	CrashPartBeforeCommittedDurable
	CrashPartAfterCommittedDurable // participant: COMMITTED durable, ACK not sent
	// CrashRecoveryOpen: the disk halts while the log is opened and
	// replayed (a crash during recovery itself).
	CrashRecoveryOpen
	// CrashRecoveryStart: a crash while carrying out the first Ready after
	// Start (the coordinator's new epoch and its resends; a participant's
	// inquiries).
	CrashRecoveryStart
	// CrashCompact: a crash just before the coordinator compacts its log
	// behind a checkpoint, or the disk halts in the middle of it (between
	// removing a segment and syncing the directory: a power loss then
	// brings the segment back).
	CrashCompact
	// CrashSnapshot: a participant crashes (power loss) while writing a
	// snapshot: after writing the temporary file, after syncing it, or
	// after the rename before the directory sync (the rename is lost).
	CrashSnapshot
	// FaultSnapshotDamage: the newest snapshot of a participant is found
	// torn (cut short) or with a flipped bit: recovery must use the one
	// before.
	FaultSnapshotDamage
	// CrashLedgerFlush: a participant crashes (power loss) while it moves
	// the committed entries it holds in memory to its ledger file between
	// two snapshots: the disk halts in the middle of the append, its
	// fsync or the id set's run file.
	CrashLedgerFlush
	numFaults
)

var faultNames = [numFaults]string{"",
	"net.drop", "net.duplicate", "net.delay", "net.partition",
	"disk.fsync-error", "disk.write-error", "disk.torn-tail", "disk.lose-unsynced", "crash.power-loss",
	"crash.random", "crash.storm",
	"crash.coord-before-commit-durable", "crash.coord-after-commit-durable", "crash.coord-mid-commit-send",
	"crash.coord-after-acks-before-end", "crash.coord-mid-abort-send",
	"crash.part-before-prepared-durable", "crash.part-after-prepared-durable",
	"crash.part-before-committed-durable", "crash.part-after-committed-durable",
	"crash.recovery-open", "crash.recovery-start", "crash.compact",
	"crash.snapshot", "disk.snapshot-damage", "crash.ledger-flush",
}

func (f Fault) String() string {
	if f == 0 || f >= numFaults {
		return fmt.Sprintf("Fault(%d)", uint8(f))
	}
	return faultNames[f]
}

// Faults returns every fault kind, in order.
func Faults() []Fault {
	fs := make([]Fault, 0, numFaults-1)
	for f := Fault(1); f < numFaults; f++ {
		fs = append(fs, f)
	}
	return fs
}

// FaultSet is a set of fault kinds.
type FaultSet uint64

// Has reports whether f is in the set.
func (s FaultSet) Has(f Fault) bool { return s&(1<<f) != 0 }

// With returns the set with f added.
func (s FaultSet) With(f ...Fault) FaultSet {
	for _, x := range f {
		s |= 1 << x
	}
	return s
}

// AllFaults is the set of every fault kind.
func AllFaults() FaultSet {
	var s FaultSet
	return s.With(Faults()...)
}

// faultGroups are the names ParseFaults accepts besides single fault names.
var faultGroups = map[string][]Fault{
	"all":       Faults(),
	"none":      nil,
	"net":       {FaultDrop, FaultDuplicate, FaultDelay, FaultPartition},
	"drop":      {FaultDrop},
	"dup":       {FaultDuplicate},
	"delay":     {FaultDelay},
	"partition": {FaultPartition},
	"disk":      {FaultFsyncError, FaultWriteError, FaultTornTail, FaultLoseUnsynced, FaultPowerLoss, FaultSnapshotDamage},
	"crash": {FaultCrashRandom, FaultCrashStorm, CrashCoordBeforeCommitDurable, CrashCoordAfterCommitDurable,
		CrashCoordMidCommitSend, CrashCoordAfterAcksBeforeEnd, CrashCoordMidAbortSend,
		CrashPartBeforePreparedDurable, CrashPartAfterPreparedDurable, CrashPartBeforeCommittedDurable,
		CrashPartAfterCommittedDurable},
	"recovery": {CrashRecoveryOpen, CrashRecoveryStart, CrashCompact, CrashSnapshot, CrashLedgerFlush},
}

// ParseFaults parses a comma-separated list of fault names (as Fault.String
// prints them) and groups: all, none, net, drop, dup, delay, partition,
// disk, crash, recovery.
func ParseFaults(list string) (FaultSet, error) {
	var s FaultSet
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if g, ok := faultGroups[name]; ok {
			s = s.With(g...)
			continue
		}
		i := slices.Index(faultNames[:], name)
		if i <= 0 {
			return 0, fmt.Errorf("sim: unknown fault %q (groups: all, none, net, drop, dup, delay, partition, disk, crash, recovery; or a name such as %s)", name, CrashCoordMidCommitSend)
		}
		s = s.With(Fault(i))
	}
	return s, nil
}

// String lists the set: a group name when it is exactly one, else names.
func (s FaultSet) String() string {
	if s == AllFaults() {
		return "all"
	}
	if s == 0 {
		return "none"
	}
	var names []string
	for _, f := range Faults() {
		if s.Has(f) {
			names = append(names, f.String())
		}
	}
	return strings.Join(names, ",")
}

// Mutant names a bug planted in the production driver (package node) or
// coordinator machine (package twopc), used to show that the campaign
// catches real bugs. The simulator runs the production code; a mutant is a
// switch in it (package mutant) that only the simulator and tests turn on.
type Mutant string

const (
	// MutantNone is the correct code.
	MutantNone Mutant = ""
	// MutantCommitBeforeLog: the coordinator sends COMMIT (and tells the
	// client) before its COMMIT record is durable.
	MutantCommitBeforeLog Mutant = "commit-before-log"
	// MutantVoteBeforePrepared: a participant sends YES before its
	// PREPARED record is durable.
	MutantVoteBeforePrepared Mutant = "vote-before-prepared"
	// MutantNoForce: the driver ignores the Force flag of records (only a
	// client outcome still makes it sync).
	MutantNoForce Mutant = "no-force"
	// MutantReplyUnforced: the coordinator reports an outcome to the
	// client without syncing the log first (unforced ABORT records may
	// still be lost).
	MutantReplyUnforced Mutant = "reply-unforced"
	// MutantSkipCommitSync: the driver does not sync a Ready that holds a
	// COMMIT record.
	MutantSkipCommitSync Mutant = "skip-commit-sync"
	// MutantReplaySkipsCommit: recovery skips COMMIT records of the log.
	MutantReplaySkipsCommit Mutant = "replay-skips-commit"
	// MutantReplayDropsLast: replay is off by one and drops the last record
	// of every log.
	MutantReplayDropsLast Mutant = "replay-drops-last"
	// MutantOffCycleVictim: the coordinator's deadlock detector aborts the
	// youngest transaction of the merged wait-for graph, which need not be
	// on the cycle it names.
	MutantOffCycleVictim Mutant = "off-cycle-victim"
	// MutantAckBeforeCommitted: a participant ACKs COMMIT before its
	// COMMITTED record is durable. Once the coordinator has forgotten the
	// outcome (the retention window), a branch that lost COMMITTED asks
	// and is told ABORT.
	MutantAckBeforeCommitted Mutant = "ack-before-committed"
	// MutantReplicaNoWait (a replicated coordinator): the leader's log
	// returns from a forced append without waiting for the group to commit
	// it.
	MutantReplicaNoWait Mutant = "replica-no-wait"
)

var mutantSets = map[Mutant]mutant.Set{
	MutantCommitBeforeLog:    mutant.CommitBeforeLog,
	MutantVoteBeforePrepared: mutant.VoteBeforePrepared,
	MutantNoForce:            mutant.NoForce,
	MutantReplyUnforced:      mutant.ReplyUnforced,
	MutantSkipCommitSync:     mutant.SkipCommitSync,
	MutantReplaySkipsCommit:  mutant.ReplaySkipsCommit,
	MutantReplayDropsLast:    mutant.ReplayDropsLast,
	MutantOffCycleVictim:     mutant.OffCycleVictim,
	MutantAckBeforeCommitted: mutant.AckBeforeCommitted,
	MutantReplicaNoWait:      mutant.ReplicaNoWait,
}

// set is the switch m turns on in the production code.
func (m Mutant) set() mutant.Set { return mutantSets[m] }

// Mutants lists every mutant.
func Mutants() []Mutant {
	return []Mutant{MutantCommitBeforeLog, MutantVoteBeforePrepared, MutantNoForce, MutantReplyUnforced,
		MutantSkipCommitSync, MutantReplaySkipsCommit, MutantReplayDropsLast, MutantOffCycleVictim,
		MutantAckBeforeCommitted, MutantReplicaNoWait}
}

// ReplicaMutants lists the mutants that only a replicated coordinator has.
func ReplicaMutants() []Mutant { return []Mutant{MutantReplicaNoWait} }

// Config configures one simulated run, or a campaign of runs (see
// Campaign). Times are in ticks of the simulated clock.
type Config struct {
	// Seed drives everything: workload, network, clock, disks, crashes.
	Seed uint64
	// Txs is the number of distinct transactions the clients submit.
	Txs int
	// Faults are the fault kinds that may be injected. Each run enables a
	// random subset of them at random rates (swarm testing), so that every
	// kind also runs without the others masking it.
	Faults FaultSet
	// Mutant plants a bug in the production driver or coordinator
	// (MutantNone: the real code).
	Mutant Mutant
	// Deadlock forces the deadlock policy of every run (0: each run draws
	// one).
	Deadlock twopc.DeadlockPolicy
	// FaultTicks is how long faults go on; then everything heals.
	FaultTicks uint64
	// LivenessTicks bounds the time from healing to "every transaction
	// resolved, nothing in doubt"; past it the run is a liveness violation.
	LivenessTicks uint64
	// Replicas is the number of coordinator replicas: 0 or 1 run a single
	// coordinator; 3 or 5 a replicated one (a raft group, replicas.go).
	Replicas int
	// MaxEvents bounds the events of one run.
	MaxEvents int
	// Trace, if set, receives one line per event.
	Trace func(line string)
}

// DefaultConfig returns a config with every fault enabled.
func DefaultConfig(seed uint64) Config {
	return Config{
		Seed:          seed,
		Txs:           30,
		Faults:        AllFaults(),
		FaultTicks:    800,
		LivenessTicks: 4000,
		MaxEvents:     2_000_000,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Txs < 1 || c.Txs > 100_000:
		return errors.New("sim: Txs must be between 1 and 100000")
	case c.FaultTicks == 0:
		return errors.New("sim: FaultTicks must be > 0")
	case c.LivenessTicks < 500:
		return errors.New("sim: LivenessTicks must be >= 500")
	case c.MaxEvents < 1000:
		return errors.New("sim: MaxEvents must be >= 1000")
	case c.Replicas < 0 || c.Replicas > 1 && c.Replicas != 3 && c.Replicas != 5:
		return fmt.Errorf("sim: %d coordinator replicas: want 1, 3 or 5", c.Replicas)
	case c.Deadlock > twopc.DeadlockTimeout:
		return fmt.Errorf("sim: unknown deadlock policy %d", c.Deadlock)
	case c.Mutant != MutantNone && !slices.Contains(Mutants(), c.Mutant):
		return fmt.Errorf("sim: unknown mutant %q", c.Mutant)
	case slices.Contains(ReplicaMutants(), c.Mutant) && c.Replicas < 3:
		return fmt.Errorf("sim: mutant %q plants a bug in a replicated coordinator: run it with 3 or 5 replicas", c.Mutant)
	}
	return nil
}
