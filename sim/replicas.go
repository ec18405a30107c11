package sim

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"iter"
	"sync"
	"syscall"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/replica"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// ---- a replicated coordinator (Config.Replicas > 1) ----
//
// The coordinator is a group of replicas (package replica, on etcd raft),
// each a component with its own disk: its raft log is the real wal on a
// wal.MemFS, raft messages between replicas cross the simulated network
// (loss, duplication, delay, partitions), and every fault of a component
// hits a replica too (crashes at random, in storms, during recovery, power
// loss, failed or torn writes of its raft log). The replicas are the
// production replica.Replica, stepped: the simulator calls Tick, Step and
// Turn on its clock instead of Run. The leader's machine is handed to the
// simulator (replica.Config.Lead), which carries out its Readies with the
// production carrier (node.Carrier) on the leader's replica.Log and cuts
// them at the coordinator's crash points, as for a single coordinator.
//
// A replica.Log append that must wait for the group (a forced record, a
// decision) blocks the coordinator's loop in production. Here each carry
// runs as a coroutine (iter.Pull): the append yields back to the event
// loop, which runs the group on (raft messages, ticks, other components)
// and resumes the carry after each Turn of that replica; messages for the
// machine wait meanwhile (the production inbox), its ticks are skipped.
//
// Messages addressed to the coordinator go to a replica that serves as the
// leader in its own view, picked at random if two do (a deposed leader
// that has not noticed yet, cut off from the rest), as a participant's
// connection may still point at it. Clients submit the same way.
//
// Raft draws each follower's election timeout from crypto/rand, which no
// seed controls. The simulator replaces crypto/rand.Reader in its process
// with a reader of zeros (so every timeout is raft's minimum) and supplies
// the randomness itself: each replica misses a seeded share of its ticks,
// so their clocks drift apart and elections still break ties. Nothing else
// in a simulation reads crypto/rand; a process that runs replicated
// simulations must not need it for anything else (dtx chaos does not).

const (
	electionTicks  = 10
	heartbeatTicks = 1
)

var zeroRandOnce sync.Once

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func useZeroRand() { zeroRandOnce.Do(func() { cryptorand.Reader = zeroReader{} }) }

// raftTransport is a replica's side of the simulated network.
type raftTransport struct {
	s *Sim
	c *comp
}

func (t raftTransport) Send(msgs []*pb.Message) {
	s := t.s
	for _, m := range msgs {
		to := s.byRID[m.GetTo()]
		if to == nil {
			continue
		}
		s.res.Messages++
		if !s.healed {
			if s.cutIdx(t.c.idx, to.idx) {
				continue
			}
			if s.on(FaultDrop) && s.roll(s.p.drop) {
				s.count(FaultDrop)
				continue
			}
		}
		s.schedule(&event{at: s.now + s.latency(), kind: evRaft, comp: to.idx, from: t.c.idx, raft: proto.Clone(m).(*pb.Message)})
		if s.on(FaultDuplicate) && s.roll(s.p.dup) {
			s.count(FaultDuplicate)
			s.schedule(&event{at: s.now + s.latency(), kind: evRaft, comp: to.idx, from: t.c.idx, raft: proto.Clone(m).(*pb.Message)})
		}
	}
}

// FetchSnapshot reads replica from's snapshot file at index from its
// disk, if it is up and reachable (replica.SnapshotFetcher): a replica
// behind the group's compacted log installs it.
func (t raftTransport) FetchSnapshot(_ context.Context, from, index uint64) ([]byte, error) {
	s := t.s
	peer := s.byRID[from]
	if peer == nil || !peer.up || peer.rep == nil || (!s.healed && s.cutIdx(peer.idx, t.c.idx)) {
		return nil, fmt.Errorf("replica %d unreachable", from)
	}
	b, err := peer.rep.SnapshotFile(index)
	if err == nil {
		s.res.ReplicaSnapshotFetches++
	}
	return b, err
}

// replicaSnapHooks cut a replica's snapshot writes: the power goes at a
// step of writing the file, or in the middle of compacting its raft log
// after it. The replica notices at its next write of the raft log.
func (s *Sim) replicaSnapHooks(c *comp) node.SnapshotHooks {
	return node.SnapshotHooks{
		Step: func(st wal.SnapshotStep) error {
			if st == wal.SnapRenamed {
				s.res.ReplicaSnapshots++
			}
			if !s.healed && c.raftFault == 0 && s.on(CrashSnapshot) && s.roll(s.p.crashPoint) {
				s.tracef("%s: the power goes after step %d of a snapshot", c.id, st)
				c.fs.HaltAfter(0)
				c.raftFault = CrashSnapshot
			}
			return nil
		},
		BeforeCompact: func(uint64) {
			if !s.healed && c.raftFault == 0 && s.on(CrashCompact) && s.roll(max(s.p.crashPoint, 0.15)) {
				s.tracef("%s: the power goes while it compacts its raft log", c.id)
				c.fs.HaltAfter(s.rng.IntN(4))
				c.raftFault = CrashCompact
			}
		},
	}
}

func (s *Sim) replicated() bool { return s.cfg.Replicas > 1 }

// coordMachineConfig is the coordinator machine's config, for a single
// coordinator and for every leadership of a replica.
func (s *Sim) coordMachineConfig() twopc.CoordinatorConfig {
	return twopc.CoordinatorConfig{
		ID: twopc.CoordinatorID, PrepareTimeout: prepareTimeout, RetryBase: retryBase, RetryMax: retryMax,
		MaxInflight: maxInflight, Rand: s.rng.Uint64, RestartBase: restartBase, RestartMax: restartMax,
		Mutants: s.mutants, Retention: s.p.retention,
	}
}

func (s *Sim) replicaConfig(c *comp, fsys wal.FS) replica.Config {
	return replica.Config{
		ID: c.rid, Peers: s.peers, Log: s.logConfig(c, fsys),
		Coordinator:   coordinator.Config{Machine: s.coordMachineConfig(), Snapshot: s.p.replicaSnap},
		Transport:     raftTransport{s, c},
		SnapshotHooks: s.replicaSnapHooks(c),
		ElectionTicks: electionTicks, HeartbeatTicks: heartbeatTicks,
		// Unforced records wait 1 to 4 machine ticks for a forced append.
		HoldTicks: 1 + s.rng.IntN(4),
		Lead:      func(l *replica.Lead) { c.newLead = l },
	}
}

// replicaOpenCalls returns how many disk calls opening c's raft log takes
// (on a copy of its disk).
func (s *Sim) replicaOpenCalls(c *comp) int {
	clone := c.fs.Clone()
	before := clone.Calls()
	r, err := replica.New(s.replicaConfig(c, clone))
	n := clone.Calls() - before
	if err == nil {
		_ = r.Close()
	}
	return n
}

// restartReplica brings a replica back from its disk: its raft log is
// opened and replayed; it leads again only if the group elects it.
func (s *Sim) restartReplica(c *comp) {
	halt := false
	if s.on(CrashRecoveryOpen) && s.roll(s.p.recovery) {
		if n := s.replicaOpenCalls(c); n > 0 {
			c.fs.HaltAfter(s.rng.IntN(n))
			halt = true
		}
	}
	r, err := replica.New(s.replicaConfig(c, c.fs))
	if halt && c.fs.Halted() {
		if r != nil {
			_ = r.Close()
		}
		s.tracef("%s crashes during recovery: %v", c.id, err)
		c.up = true // so that crash counts and schedules it
		s.crash(c, CrashRecoveryOpen, s.rng.IntN(2) == 0)
		return
	}
	if err != nil {
		s.violate("recovery", "%s: %v", c.id, err)
		s.stopErr = err
		return
	}
	c.rep, c.up = r, true
	if r.SnapshotStats().Loaded > 0 {
		s.res.ReplicaSnapshotLoads++
	}
	s.res.Restarts++
	s.tracef("%s up (incarnation %d)", c.id, c.inc)
	s.drive(c)
}

// tickReplica advances a replica's raft clock (unless it misses this
// tick), arms a fault of its raft log's disk now and then, and ticks its
// leadership's machine if it runs one and is not in the middle of a carry.
func (s *Sim) tickReplica(c *comp) {
	if !s.healed && c.raftFault == 0 && s.roll(s.p.disk/4) {
		switch f := []Fault{FaultFsyncError, FaultWriteError, FaultTornTail}[s.rng.IntN(3)]; {
		case !s.on(f):
		case f == FaultFsyncError:
			c.fs.FailNth(wal.OpSync, 1+s.rng.IntN(3), syscall.EIO)
			c.raftFault = f
		case f == FaultWriteError:
			c.fs.FailNth(wal.OpWrite, 1+s.rng.IntN(3), syscall.EIO)
			c.raftFault = f
		default:
			c.fs.HaltAfter(s.rng.IntN(4))
			c.raftFault = f
		}
	}
	if s.rng.IntN(4) != 0 {
		if err := c.rep.Tick(); err != nil {
			s.raftFailed(c, err)
			return
		}
	}
	if c.lead != nil && c.next == nil {
		c.m.Tick()
		if err := c.lead.Log.Tick(); err != nil {
			s.logFailed(c, err)
			return
		}
	}
	s.drive(c)
}

// deliverRaft hands a raft message to its replica.
func (s *Sim) deliverRaft(e *event) {
	c := s.comps[e.comp]
	s.hash.add(uint64(e.raft.GetType()), e.raft.GetTerm(), e.raft.GetIndex(), uint64(len(e.raft.GetEntries())))
	if !c.up || s.cutIdx(e.from, c.idx) {
		return
	}
	if err := c.rep.Step(e.raft); err != nil {
		s.raftFailed(c, err)
		return
	}
	s.drive(c)
}

// raftFailed crashes a replica whose raft log failed.
func (s *Sim) raftFailed(c *comp, err error) {
	why := c.raftFault
	if why == 0 {
		if c.plan.st == stageTorn || c.plan.disk != 0 {
			why = c.plan.disk
		}
	}
	if !errors.Is(err, wal.ErrFailed) && !errors.Is(err, wal.ErrCrashed) {
		s.violate("disk", "%s: unexpected raft log error: %v", c.id, err)
	}
	if why == 0 {
		s.violate("disk", "%s: raft log failed with no fault injected: %v", c.id, err)
		why = FaultCrashRandom
	}
	s.tracef("%s crashes: raft log failed (%s): %v", c.id, why, err)
	s.crash(c, why, true)
}

// drive runs a replica on after it moved: its Turns, its leadership's
// machine (started, dropped), the carry waiting for the group (resumed),
// and the machine's next Readies, until nothing more moves.
func (s *Sim) drive(c *comp) {
	for range 64 {
		if !c.up {
			return
		}
		if err := c.rep.Turn(); err != nil {
			s.raftFailed(c, err)
			return
		}
		if c.raftFault != 0 && c.fs.Halted() {
			// The power went in the middle of a snapshot or a compaction
			// (replicaSnapHooks), whose failure the replica only logs.
			s.tracef("%s crashes: its disk halted (%s)", c.id, c.raftFault)
			s.crash(c, c.raftFault, true)
			return
		}
		s.followLead(c)
		if !c.up || c.lead == nil || !s.carryOn(c) {
			if c.up && c.rep != nil {
				// Send what the carry proposed before it yielded.
				if err := c.rep.Turn(); err != nil {
					s.raftFailed(c, err)
				}
			}
			return
		}
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// followLead drops the machine of a leadership that ended and starts the
// machine of a new one.
func (s *Sim) followLead(c *comp) {
	if c.lead != nil && closed(c.lead.Done) {
		s.tracef("%s stops leading (term %d)", c.id, c.lead.Term)
		s.dropLead(c)
	}
	if l := c.newLead; l != nil {
		c.newLead = nil
		if closed(l.Done) {
			return
		}
		if c.lead != nil {
			s.dropLead(c)
		}
		c.lead, c.coord, c.m = l, l.Machine, l.Machine
		c.carrier = &node.Carrier{ID: c.id, Log: l.Log, Transport: transport{s, c}, OnRecord: s.observe(c),
			Hooks: s.hooks(c), OnOutcomes: s.report}
		c.recovering = true
		s.res.Leaderships++
		s.tracef("%s leads (term %d, restored at index %d)", c.id, l.Term, l.Index)
		s.noteRestoredOutcomes(c)
	}
}

// dropLead stops c's machine: a carry waiting for the group gives up (its
// append fails, nothing more of its Ready is sent or reported), and the
// messages held for the machine are lost with it.
func (s *Sim) dropLead(c *comp) {
	if c.stop != nil {
		stop := c.stop
		c.next, c.stop = nil, nil
		stop()
	}
	if c.coord != nil {
		s.res.TxRestarts += c.coord.DeadlockStats().Restarts
	}
	c.lead, c.coord, c.m, c.carrier, c.held = nil, nil, nil, nil, nil
}

// carryOn resumes the carry waiting for the group, then carries out the
// machine's next Readies; it reports whether anything moved (a carry
// finished or a new one began).
func (s *Sim) carryOn(c *comp) bool {
	moved := false
	if c.next != nil {
		if _, waiting := c.next(); waiting {
			return false
		}
		c.next, c.stop = nil, nil
		moved = true
		if !s.carryDone(c) {
			return true
		}
	}
	for c.up && c.lead != nil && c.m.HasReady() {
		moved = true
		next, stop := iter.Pull(func(yield func(struct{}) bool) {
			c.lead.Log.SetYield(func() bool { return yield(struct{}{}) })
			c.carryErr = c.carrier.Carry(c.m)
		})
		c.carryErr = nil
		_, waiting := next()
		c.recovering = false
		if waiting {
			c.next, c.stop = next, stop
			return true
		}
		stop()
		if !s.carryDone(c) {
			return true
		}
	}
	return moved
}

// carryDone handles the end of a carry: a crash point or a lost
// leadership; otherwise the messages held during it reach the machine. It
// reports whether the machine still runs.
func (s *Sim) carryDone(c *comp) bool {
	err := c.carryErr
	c.carryErr = nil
	switch {
	case err == nil:
		held := c.held
		c.held = nil
		for _, m := range held {
			c.m.Step(m)
		}
		return true
	case errors.Is(err, node.ErrCrashed):
		s.carryFailed(c, err)
	default:
		s.logFailed(c, err)
	}
	return false
}

// logFailed stops c's machine after its Log failed outside a crash point:
// a lost leadership ends the machine; any other error is a violation.
func (s *Sim) logFailed(c *comp, err error) {
	var nl *replica.NotLeaderError
	if errors.As(err, &nl) || errors.Is(err, replica.ErrStopped) {
		s.tracef("%s: its machine stops: %v", c.id, err)
		l := c.lead
		s.dropLead(c)
		c.rep.Resign(l)
		return
	}
	s.violate("recovery", "%s: carry failed: %v", c.id, err)
	s.stopErr = err
}

// serving returns the replicas that run a machine, in the order of comps.
func (s *Sim) serving() []*comp {
	var out []*comp
	for _, c := range s.comps {
		if c.role == roleReplica && c.up && c.lead != nil {
			out = append(out, c)
		}
	}
	return out
}

// pickCoord returns the component a message or submission for the
// coordinator reaches (nil: none serves, or none is reachable from from).
func (s *Sim) pickCoord(from int) *comp {
	if !s.replicated() {
		return s.comps[0]
	}
	var ok []*comp
	for _, c := range s.serving() {
		if !s.cutIdx(from, c.idx) {
			ok = append(ok, c)
		}
	}
	switch len(ok) {
	case 0:
		return nil
	case 1:
		return ok[0]
	}
	return ok[s.rng.IntN(len(ok))]
}

// leaderComp returns the coordinator component whose machine speaks for
// the group: the single coordinator, or the serving replica of the
// highest term (nil if none).
func (s *Sim) leaderComp() *comp {
	if !s.replicated() {
		return s.comps[0]
	}
	var best *comp
	for _, c := range s.serving() {
		if best == nil || c.lead.Term > best.lead.Term {
			best = c
		}
	}
	return best
}

// replicasQuiet reports whether the group has a leader with nothing on
// its way: every proposal applied, no carry waiting, no Ready left.
func (s *Sim) replicasQuiet() bool {
	l := s.leaderComp()
	return l != nil && len(s.serving()) == 1 && l.next == nil && len(l.held) == 0 && !l.m.HasReady() && l.lead.Log.Held() == 0 && l.rep.Idle()
}

// checkReplicaReplay replays each replica's committed raft log, twice,
// into fresh machines: the same state both times, and the leader's live
// state for every replica that has committed as much as the leader.
func (s *Sim) checkReplicaReplay() {
	l := s.leaderComp()
	live := coordStates(l.coord, s.clients)
	lead := l.rep.Status().Commit
	for _, c := range s.comps {
		if c.role != roleReplica {
			continue
		}
		if err := c.rep.Close(); err != nil {
			s.violate("replay", "%s: close: %v", c.id, err)
			return
		}
		var states [2]map[string]string
		var commit uint64
		for k := range states {
			m, ci, err := replica.ReplayCommitted(s.logConfig(c, c.fs.Clone()), s.peers, twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 1, RetryBase: 1, RetryMax: 1})
			if err != nil {
				s.violate("replay", "%s: replay %d: %v", c.id, k+1, err)
				return
			}
			states[k], commit = coordStates(m, s.clients), ci
		}
		if fmt.Sprint(states[0]) != fmt.Sprint(states[1]) {
			s.violate("replay", "%s: two replays of the same raft log differ:\n%v\n%v", c.id, states[0], states[1])
		}
		if commit >= lead && fmt.Sprint(states[0]) != fmt.Sprint(live) {
			s.violate("replay", "%s: its raft log (commit %d, the leader's %d) replays to a state other than the leader's live one:\nreplayed %v\nlive     %v", c.id, commit, lead, states[0], live)
		}
	}
}
