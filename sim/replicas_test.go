package sim

import (
	"strings"
	"testing"
)

func replicatedConfig(seed uint64) Config {
	cfg := DefaultConfig(seed)
	cfg.Replicas = 3
	return cfg
}

// TestCampaignReplicated is the campaign with a replicated coordinator:
// three replicas (a raft group) in place of the single coordinator, every
// fault kind hitting them too (crashes of any replica at every crash
// point, partitions that often isolate the leader, loss, duplication and
// delay of raft messages, failed and torn writes of raft logs), and every
// checker on every run.
func TestCampaignReplicated(t *testing.T) {
	cfg := replicatedConfig(1)
	runs := campaignRuns() / 5
	if raceEnabled && *runsFlag == 0 {
		runs = 60
	}
	if *seedFlag != 0 {
		cfg.Seed, runs = *seedFlag, 1
	}
	sum := Campaign(cfg, runs, 0, nil, nil)
	report(t, cfg, sum.Violations)
	if runs < 50 {
		return
	}
	for _, f := range Faults() {
		if sum.Injected[f] == 0 {
			t.Errorf("fault %s was never injected in %d runs", f, runs)
		}
	}
	if sum.Leaderships < 2*runs {
		t.Errorf("only %d leaderships in %d runs: the leader was rarely replaced", sum.Leaderships, runs)
	}
	if sum.Committed < runs*cfg.Txs/10 {
		t.Errorf("only %d of %d transactions committed: the faults leave too little to check", sum.Committed, runs*cfg.Txs)
	}
	var b strings.Builder
	sum.Print(&b)
	t.Log("\n" + b.String())
}

// TestDeterminismReplicated: a replicated run replays event for event too
// (raft's own randomness is neutralised, the simulator's seeded tick
// drift replaces it).
func TestDeterminismReplicated(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		a := Run(replicatedConfig(seed))
		b := Run(replicatedConfig(seed))
		if a.Hash != b.Hash || a.Events != b.Events || a.Injected != b.Injected || len(a.Violations) != len(b.Violations) {
			t.Errorf("seed %d: two runs differ: hash %x/%x, events %d/%d", seed, a.Hash, b.Hash, a.Events, b.Events)
		}
		if a.Leaderships == 0 {
			t.Errorf("seed %d: no replica ever led", seed)
		}
	}
}

// TestReplicatedMutantsCaught: with a replicated coordinator the checkers
// still catch the bugs planted in the driver (the leader's carrier, the
// participants'), besides the replica's own (TestMutantsCaught). Some of
// the driver's mutants cannot hurt a replicated coordinator, by design:
// its log waits for the group before any decision leaves, whatever sync
// flag the carrier passes (skip-commit-sync, reply-unforced), and a new
// leader restores its machine from the raft log, not through node's
// replay (replay-skips-commit).
func TestReplicatedMutantsCaught(t *testing.T) {
	for _, m := range []Mutant{MutantCommitBeforeLog, MutantVoteBeforePrepared, MutantNoForce, MutantReplicaNoWait} {
		t.Run(string(m), func(t *testing.T) {
			cfg := replicatedConfig(1)
			cfg.Mutant = m
			runs := mutantRuns()
			for seed := uint64(1); seed <= uint64(runs); seed++ {
				cfg.Seed = seed
				if r := Run(cfg); len(r.Violations) > 0 {
					t.Logf("caught by run %d of %d: %s", seed, runs, r.Violations[0])
					return
				}
			}
			t.Fatalf("mutant %s not caught in %d runs of a replicated coordinator", m, runs)
		})
	}
}

// TestLinearCheckerCatches: the linearizability checker refuses a history
// in which an id was answered COMMITTED and later ROLLED_BACK, or whose
// final state disagrees with an answer, and accepts agreeing ones.
func TestLinearCheckerCatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []bool // answers to client 0, in order
		final   bool
		bad     bool
	}{
		{"agree", []bool{true, true}, true, false},
		{"two outcomes", []bool{true, false}, true, true},
		{"final disagrees", []bool{false}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSim(DefaultConfig(1))
			if err != nil {
				t.Fatal(err)
			}
			cl := s.clients[0]
			for i, a := range tc.answers {
				cl.callAt, s.now = uint64(10*i), uint64(10*i+5)
				s.linAnswer(cl, a)
			}
			s.checkLinear(map[string]bool{cl.req.TxID: tc.final})
			if got := len(s.res.Violations) > 0; got != tc.bad {
				t.Fatalf("violations %v, want bad=%v", s.res.Violations, tc.bad)
			}
		})
	}
}

// TestRegressReplicatedSeeds replays replicated runs that found bugs.
func TestRegressReplicatedSeeds(t *testing.T) {
	for _, seed := range []uint64{
		1004338, // a follower's HardState synced with a leader's snapshot was the one before it: raft refused to restart after a power loss
	} {
		if r := Run(replicatedConfig(seed)); len(r.Violations) > 0 {
			t.Errorf("seed %d: %s", seed, r.Violations[0])
		}
	}
}
