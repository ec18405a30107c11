package twopc

import "testing"

// TestLateDuplicatePrepareNeverCommitsTwiceWithParticipantRetention: a
// participant using ParticipantRetention of the coordinator's Retention
// forgets a committed branch only after the coordinator has forgotten the
// outcome, so a late duplicate PREPARE (a copy of the first one, delayed in
// the network) that re-prepares the forgotten branch is answered ABORT and
// undone, never answered COMMIT and applied a second time.
//
// The worst moment is searched exhaustively: the participant's clock runs
// ahead of the coordinator's by every phase (so that its generation of the
// branch ends as soon after the commit as possible while the coordinator's
// generation of the outcome began just before), and the duplicate is
// delivered at every tick from the commit until both have forgotten it.
// With a participant retention equal to the coordinator's (instead of
// twice), some of these runs re-prepare the branch while the coordinator
// still remembers COMMIT, and commit it twice.
func TestLateDuplicatePrepareNeverCommitsTwiceWithParticipantRetention(t *testing.T) {
	// The coordinator's Retention: the windows where a generation's span
	// rounds up to a large part of it (1 to 7 ticks), and larger ones.
	for _, w := range []uint64{1, 2, 3, 5, 7, 8, 10, 13, 22} {
		latePrepareSearch(t, w)
	}
}

func latePrepareSearch(t *testing.T, w uint64) {
	pr := ParticipantRetention(w)
	reprepared, ignored := 0, 0
	for phase := range pr {
		for at := uint64(0); at <= 2*Generations*(GenerationTicks(pr)+GenerationTicks(w)); at++ {
			r := latePrepareRun(t, w, pr, phase, at)
			if r.failed {
				t.Logf("the coordinator's retention %d, the participant's %d", w, pr)
				return
			}
			if r.reprepared {
				reprepared++
			} else {
				ignored++
			}
		}
	}
	// Both cases happened: the test would see a double commit if one
	// could happen.
	if reprepared == 0 || ignored == 0 {
		t.Fatalf("retention %d: the late PREPARE re-prepared the branch in %d runs and was ignored in %d: the search misses a case", w, reprepared, ignored)
	}
}

type latePrepareResult struct{ reprepared, failed bool }

// latePrepareRun commits t1 at one participant after ticking the
// participant alone phase times, then ticks both together and delivers a
// copy of t1's PREPARE at tick at after the commit.
func latePrepareRun(t *testing.T, w, pr, phase, at uint64) latePrepareResult {
	t.Helper()
	ccfg := testCoordConfig()
	ccfg.Retention = w
	c, err := NewCoordinator(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	pcfg := testPartConfig("a")
	pcfg.Retention = pr
	res := newKV()
	p, err := NewParticipant(pcfg, multiKV{res})
	if err != nil {
		t.Fatal(err)
	}
	var cl, pl memLog
	c.Start()
	p.Start()
	take(&cl, c)
	take(&pl, p)
	for range phase {
		p.Tick()
		take(&pl, p)
	}
	var dup *Message
	var queue []Message
	deliver := func() {
		queue = append(queue, take(&cl, c).Messages...)
		queue = append(queue, take(&pl, p).Messages...)
		for len(queue) > 0 {
			m := queue[0]
			queue = queue[1:]
			if m.To == CoordinatorID {
				c.Step(m)
			} else {
				if m.Type == MsgPrepare && dup == nil {
					cp := m
					dup = &cp
				}
				p.Step(m)
			}
			queue = append(queue, take(&cl, c).Messages...)
			queue = append(queue, take(&pl, p).Messages...)
		}
	}
	if err := c.Propose("t1", []Branch{{Node: "a", Op: []byte("k1")}}); err != nil {
		t.Fatal(err)
	}
	deliver()
	if st, _ := c.State("t1"); st != CoordCommitted || res.calls["commit t1"] != 1 || c.Inflight() != 0 {
		t.Fatalf("t1 did not commit and end: %v, calls %v", st, res.calls)
	}
	fail := func(format string, args ...any) latePrepareResult {
		t.Helper()
		t.Errorf("participant ahead by %d ticks, duplicate PREPARE %d ticks after the commit (coordinator retention %d, participant %d): "+format,
			append([]any{phase, at, w, pr}, args...)...)
		return latePrepareResult{failed: true}
	}
	for tick := uint64(0); tick <= at+3; tick++ {
		if tick == at {
			queue = append(queue, *dup)
		}
		deliver()
		c.Tick()
		p.Tick()
		deliver()
	}
	r := latePrepareResult{reprepared: res.calls["prepare t1"] > 1}
	switch {
	case res.calls["commit t1"] != 1:
		return fail("t1 committed %d times at the participant", res.calls["commit t1"])
	case res.committed["t1"] != "k1":
		return fail("the participant's resource lost t1's commit: %v", res.committed)
	case p.InDoubt() != 0 || res.prepared["t1"] != "":
		return fail("the re-prepared branch is still in doubt")
	case r.reprepared && res.calls["abort t1"] != 1:
		return fail("the re-prepared branch was not undone: %v", res.calls)
	}
	if st, ok := c.State("t1"); ok && st != CoordCommitted && !r.reprepared {
		return fail("the coordinator says %v about committed t1", st)
	}
	return r
}
