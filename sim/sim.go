package sim

import (
	pb "go.etcd.io/raft/v3/raftpb"

	"container/heap"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/dtx-dev/dtx/replica"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Protocol timing of the simulated deployment, in ticks. A message takes 1
// to 3 ticks; timeouts are a few round trips.
const (
	prepareTimeout = 40
	retryBase      = 4
	retryMax       = 64
	restartBase    = 2 // pause before a restarted attempt's PREPAREs
	restartMax     = 8
	lockTimeout    = 20
	inquireAfter   = 30
	inquireMax     = 120
	maxInflight    = 64
)

// Violation is a broken invariant found by a checker.
type Violation struct {
	Seed   uint64
	Check  string // atomicity, lost-commit, outcome, duplicate, conservation, liveness, replay, recovery, deadlock, disk, panic
	Detail string
}

func (v Violation) String() string {
	return fmt.Sprintf("seed %d: %s: %s", v.Seed, v.Check, v.Detail)
}

// Result is what one run did and found.
type Result struct {
	Seed       uint64
	Enabled    FaultSet // the fault kinds this run drew (swarm)
	Injected   [numFaults]int
	Violations []Violation
	Committed  int // transactions committed at the end
	Aborted    int
	Events     int
	Messages   int
	Crashes    int // component crashes of every kind
	Restarts   int // successful recoveries
	Snapshots  int // participant snapshots written
	// CoordSnapshots counts the coordinator's snapshots written,
	// CoordSnapshotLoads its restarts from one.
	CoordSnapshots, CoordSnapshotLoads int
	// TableBytes counts what snapshots appended to their table files.
	TableBytes uint64
	// ReplicaSnapshots counts the snapshot files replicas wrote,
	// ReplicaSnapshotLoads their restarts from one, and
	// ReplicaSnapshotFetches the files fetched from another replica by
	// one behind the group's compacted log.
	ReplicaSnapshots, ReplicaSnapshotLoads, ReplicaSnapshotFetches int
	// LedgerFlushes counts the moves of participants' ledger entries to
	// their files between snapshots.
	LedgerFlushes int
	// Forgotten counts the finished branches participants dropped past
	// their retention.
	Forgotten uint64
	// ExpiredRefusals counts resubmissions refused as "outcome expired",
	// each more than the window after its outcome.
	ExpiredRefusals uint64
	// Deadlock is the policy this run drew; TxRestarts counts deadlock
	// victims the coordinator restarted as a new attempt (all incarnations).
	Deadlock   twopc.DeadlockPolicy
	TxRestarts uint64
	MultiDown  int    // crashes that left two or more components down at once
	MaxDown    int    // most components down at the same moment
	HealTick   uint64 // when faults stopped
	QuietTick  uint64 // when everything was resolved (0: never)
	Hash       uint64 // hash of the event trace: same seed and build, same hash
	// Leaderships counts the leaderships whose machine started (a
	// replicated coordinator; 0 for a single one).
	Leaderships int
}

// Count returns how many faults of kind f were injected.
func (r *Result) Count(f Fault) int { return r.Injected[f] }

type role uint8

const (
	roleCoord role = 1 + iota
	rolePart
	roleReplica // a replica of a replicated coordinator
)

// comp is one simulated component: a machine, its log and its disk.
type comp struct {
	idx   int
	id    string
	role  role
	fs    *wal.MemFS
	log   *wal.Log
	coord *twopc.Coordinator
	part  *twopc.Participant
	res   *countingResource
	m     node.Machine
	// carrier is the production driver of this incarnation.
	carrier *node.Carrier
	plan    plan // of the Ready the carrier is carrying out
	up      bool
	inc     uint64 // incarnation: bumped by every crash
	// recovering is set while the first Ready after Start is carried out.
	recovering bool
	lastSnap   uint64 // tick of the last snapshot
	// tables writes the table files of its snapshots (node.Tables).
	tables *node.Tables

	// A coordinator replica's (see replicas.go): its id in the group, the
	// stepped replica, the leadership whose machine runs here (coord, m
	// and carrier are its), one handed over in the middle of a Turn, the
	// carry waiting for the group (a coroutine) and its result, messages
	// held for the machine meanwhile, and the fault armed on its raft
	// log's disk.
	rid       uint64
	rep       *replica.Replica
	lead      *replica.Lead
	newLead   *replica.Lead
	next      func() (struct{}, bool)
	stop      func()
	carryErr  error
	held      []twopc.Message
	raftFault Fault
}

type evKind uint8

const (
	evTick evKind = 1 + iota
	evDeliver
	evSubmit
	evClientTimeout
	evRestart
	evRaft // a raft message between coordinator replicas
)

type event struct {
	at, seq uint64
	kind    evKind
	comp    int
	msg     twopc.Message
	client  int
	gen     uint64
	from    int         // the sender's component (evDeliver, evRaft)
	raft    *pb.Message // evRaft
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// params are the fault rates of one run, drawn from its seed.
type params struct {
	on          FaultSet
	drop        float64 // per message
	dup         float64 // per message
	delay       float64 // per message
	partition   float64 // per tick, when none is active
	crashPoint  float64 // per Ready that reaches a crash point
	crashRandom float64 // per component per tick
	storm       float64 // per tick
	disk        float64 // per synced append
	recovery    float64 // per restart
	power       float64 // share of crashes that are power losses
	maxDown     uint64
	segSize     int64
	// retention is the coordinator's outcome retention (0: forever);
	// clientTimeout and resubmit (the most a client waits before an extra
	// resubmission) keep every resubmission of an id within the window.
	retention     uint64
	clientTimeout uint64
	resubmit      int
	snapEvery     uint64 // ticks between participant snapshots (0: none)
	replicaSnap   coordinator.SnapshotConfig
	ledgerHeld    int // committed entries a participant holds before it moves them to its ledger file (0: only at snapshots)
	deadlock      twopc.DeadlockPolicy
}

// Sim is one simulated run. It is single-threaded and deterministic.
type Sim struct {
	cfg     Config
	rng     *rand.Rand
	p       params
	now     uint64
	seq     uint64
	q       eventQueue
	comps   []*comp
	byID    map[string]*comp
	byRID   map[uint64]*comp // coordinator replicas by raft id
	peers   []uint64
	clients []*client
	byTx    map[string]*client
	world   worldSpec
	healed  bool
	done    bool
	// partitioned is the index of the component cut off, or -1.
	partitioned int
	partEnd     uint64
	hash        hashState
	history     []porcupine.Operation // answered submissions (linear.go)
	res         Result
	stopErr     error      // a violation that makes going on pointless
	mutants     mutant.Set // the bugs Config.Mutant plants in the driver
}

type hashState struct{ h uint64 }

func (h *hashState) add(vals ...uint64) {
	for _, v := range vals {
		for i := 0; i < 8; i++ {
			h.h ^= v & 0xff
			h.h *= 1099511628211
			v >>= 8
		}
	}
}

func (h *hashState) addString(s string) {
	for i := 0; i < len(s); i++ {
		h.h ^= uint64(s[i])
		h.h *= 1099511628211
	}
	h.add(uint64(len(s)))
}

// Run runs one simulation with cfg and returns what it found. It never
// panics: a panic of the code under test is reported as a violation.
func Run(cfg Config) (res Result) {
	s, err := newSim(cfg)
	if err != nil {
		return Result{Seed: cfg.Seed, Violations: []Violation{{Seed: cfg.Seed, Check: "config", Detail: err.Error()}}}
	}
	defer func() {
		if r := recover(); r != nil {
			s.violate("panic", "%v at tick %d\n%s", r, s.now, firstLines(string(debug.Stack()), 30))
			res = s.finishResult()
		}
	}()
	s.run()
	return s.finishResult()
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func newSim(cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:         cfg,
		rng:         rand.New(rand.NewPCG(cfg.Seed, 0x64747863686173)), // "dtxchas"
		byID:        map[string]*comp{},
		byTx:        map[string]*client{},
		partitioned: -1,
	}
	s.hash.h = 14695981039346656037
	s.mutants = cfg.Mutant.set()
	s.res.Seed = cfg.Seed
	s.drawParams()
	s.res.Enabled = s.p.on
	s.res.Deadlock = s.p.deadlock
	s.world = newWorld(s.rng)
	coords := []string{twopc.CoordinatorID}
	if s.replicated() {
		useZeroRand()
		s.byRID = map[uint64]*comp{}
		coords = coords[:0]
		for i := 1; i <= cfg.Replicas; i++ {
			coords = append(coords, fmt.Sprintf("%s-%d", twopc.CoordinatorID, i))
			s.peers = append(s.peers, uint64(i))
		}
	}
	for i, id := range append(coords, services.IDs()...) {
		c := &comp{idx: i, id: id, role: rolePart, fs: wal.NewMemFS(cfg.Seed*4 + uint64(i) + 1)}
		if i < len(coords) {
			c.role = roleCoord
			if s.replicated() {
				c.role, c.rid = roleReplica, uint64(i+1)
				s.byRID[c.rid] = c
			}
		}
		s.comps = append(s.comps, c)
		s.byID[id] = c
	}
	s.makeClients()
	return s, nil
}

// drawParams picks this run's faults and rates (swarm testing: each run
// enables a random subset of the configured kinds, so one kind is also
// exercised without the others masking it).
func (s *Sim) drawParams() {
	r := s.rng
	var on FaultSet
	for _, f := range Faults() {
		if s.cfg.Faults.Has(f) && r.IntN(4) != 0 {
			on = on.With(f)
		}
	}
	if on == 0 && s.cfg.Faults != 0 {
		all := Faults()
		for {
			if f := all[r.IntN(len(all))]; s.cfg.Faults.Has(f) {
				on = on.With(f)
				break
			}
		}
	}
	// Intensity scales every rate, log-uniformly from gentle to brutal, so
	// that some runs get far into the commit phase and others crash at
	// every turn.
	k := math.Pow(2, -5*r.Float64())
	s.p = params{
		on:          on,
		drop:        k * (0.01 + 0.15*r.Float64()),
		dup:         k * (0.01 + 0.1*r.Float64()),
		delay:       k * (0.02 + 0.3*r.Float64()),
		partition:   k * (0.001 + 0.006*r.Float64()),
		crashPoint:  k * (0.01 + 0.15*r.Float64()),
		crashRandom: k * (0.0002 + 0.002*r.Float64()),
		storm:       k * (0.0002 + 0.002*r.Float64()),
		disk:        k * (0.005 + 0.04*r.Float64()),
		recovery:    0.1 + 0.5*r.Float64(),
		power:       0.2 + 0.6*r.Float64(),
		maxDown:     uint64(5 + r.IntN(150)),
		segSize:     wal.DefaultSegmentSize,
	}
	s.p.deadlock = twopc.DeadlockPolicy(1 + r.IntN(3))
	if s.cfg.Deadlock != 0 {
		s.p.deadlock = s.cfg.Deadlock
	}
	if r.IntN(3) == 0 {
		s.p.segSize = 2048 + int64(r.IntN(4096)) // many rollovers
	}
	if r.IntN(3) != 0 {
		s.p.snapEvery = uint64(10 + r.IntN(200))
	}
	// Replicas snapshot their state every few KiB of raft log or every
	// few dozen raft ticks (a stepped replica counts Every in ticks of
	// 10 ms), or never.
	s.p.replicaSnap = coordinator.SnapshotConfig{Off: true}
	if r.IntN(4) != 0 {
		s.p.replicaSnap = coordinator.SnapshotConfig{LogBytes: uint64(1024 + r.IntN(16<<10)), Every: time.Duration(20+r.IntN(200)) * 10 * time.Millisecond}
	}
	s.p.clientTimeout, s.p.resubmit = 150, 400
	if r.IntN(4) != 0 {
		// Outcomes are forgotten, some quickly: a client resubmits within
		// the window (a timeout of at most R/2, extra resubmissions at most
		// R/4 apart), but a branch that comes back after a long crash asks
		// about a transaction the coordinator has forgotten.
		s.p.retention = uint64(20 + r.IntN(400))
		s.p.clientTimeout = min(150, s.p.retention/2)
		s.p.resubmit = int(s.p.retention / 4)
	}
	if r.IntN(2) == 0 {
		s.p.ledgerHeld = 1 + r.IntN(8)
	}
}

func (s *Sim) on(f Fault) bool { return !s.healed && s.p.on.Has(f) }

func (s *Sim) count(f Fault) { s.res.Injected[f]++ }

func (s *Sim) roll(p float64) bool { return s.rng.Float64() < p }

func (s *Sim) violate(check, format string, args ...any) {
	v := Violation{Seed: s.cfg.Seed, Check: check, Detail: fmt.Sprintf(format, args...)}
	s.res.Violations = append(s.res.Violations, v)
	s.tracef("VIOLATION %s", v)
}

func (s *Sim) tracef(format string, args ...any) {
	if s.cfg.Trace != nil {
		s.cfg.Trace(fmt.Sprintf("%6d ", s.now) + fmt.Sprintf(format, args...))
	}
}

func (s *Sim) schedule(e *event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

func (s *Sim) run() {
	for _, c := range s.comps {
		s.restart(c)
	}
	s.scheduleSubmissions()
	s.schedule(&event{at: 1, kind: evTick})
	deadline := s.cfg.FaultTicks + s.cfg.LivenessTicks
	for !s.done && s.q.Len() > 0 && s.stopErr == nil {
		e := heap.Pop(&s.q).(*event)
		s.now = e.at
		s.res.Events++
		if s.res.Events > s.cfg.MaxEvents {
			s.violate("liveness", "more than %d events by tick %d", s.cfg.MaxEvents, s.now)
			break
		}
		if s.now > deadline {
			s.violate("liveness", "not resolved %d ticks after healing: %s", s.cfg.LivenessTicks, s.unresolved())
			break
		}
		s.hash.add(e.at, uint64(e.kind), uint64(e.comp), uint64(e.client))
		switch e.kind {
		case evTick:
			s.tick()
			if !s.done {
				s.schedule(&event{at: s.now + 1, kind: evTick})
			}
		case evDeliver:
			s.deliver(e)
		case evRaft:
			s.deliverRaft(e)
		case evSubmit:
			s.submit(s.clients[e.client])
		case evClientTimeout:
			cl := s.clients[e.client]
			if cl.waiting && cl.gen == e.gen {
				s.tracef("client %s: no answer, resubmits", cl.req.TxID)
				s.submit(cl)
			}
		case evRestart:
			c := s.comps[e.comp]
			if !c.up && c.inc == e.gen {
				s.restart(c)
			}
		}
	}
	if s.done {
		s.checkFinal()
	}
}

func (s *Sim) tick() {
	if !s.healed && s.now >= s.cfg.FaultTicks {
		s.heal()
	}
	if !s.healed {
		s.injectTickFaults()
	}
	for _, c := range s.comps {
		if c.up && c.role == roleReplica {
			s.tickReplica(c)
			continue
		}
		if c.up {
			c.m.Tick()
			s.flush(c)
			s.maybeSnapshot(c)
			s.maybeFlushLedger(c)
		}
	}
	if s.healed && s.quiet() {
		s.res.QuietTick = s.now
		s.done = true
	}
}

func (s *Sim) injectTickFaults() {
	if s.partitioned >= 0 && s.now >= s.partEnd {
		s.tracef("partition of %s heals", s.comps[s.partitioned].id)
		s.partitioned = -1
	}
	if s.partitioned < 0 && s.on(FaultPartition) && s.roll(s.p.partition) {
		s.partitioned = s.rng.IntN(len(s.comps))
		if l := s.leaderComp(); s.replicated() && l != nil && s.rng.IntN(2) == 0 {
			s.partitioned = l.idx // isolate the leader
		}
		s.partEnd = s.now + 20 + uint64(s.rng.IntN(230))
		s.count(FaultPartition)
		s.tracef("partition: %s cut off until %d", s.comps[s.partitioned].id, s.partEnd)
	}
	if s.on(FaultCrashStorm) && s.roll(s.p.storm) {
		n := 2 + s.rng.IntN(len(s.comps)-1)
		idx := s.rng.Perm(len(s.comps))[:n]
		crashed := 0
		for _, i := range idx {
			if c := s.comps[i]; c.up {
				s.crash(c, FaultCrashStorm, false)
				crashed++
			}
		}
		if crashed > 0 {
			s.res.Injected[FaultCrashStorm] -= crashed - 1 // one storm, however many fell
		}
	}
	for _, c := range s.comps {
		if c.up && s.on(FaultCrashRandom) && s.roll(s.p.crashRandom) {
			s.crash(c, FaultCrashRandom, false)
		}
	}
}

// heal stops every fault: links heal, every component comes back.
func (s *Sim) heal() {
	s.healed = true
	s.res.HealTick = s.now
	s.partitioned = -1
	s.tracef("heal")
	for _, c := range s.comps {
		// A replica whose disk halted after a fault was armed, at a call
		// it made no Turn after (a peer reading its snapshot file, say),
		// has lost its power: it crashes now, and comes back below.
		if c.role == roleReplica && c.up && c.raftFault != 0 && c.fs.Halted() {
			s.tracef("%s crashes: its disk halted (%s)", c.id, c.raftFault)
			s.crash(c, c.raftFault, true)
		}
	}
	for _, c := range s.comps {
		if c.role == roleReplica && c.raftFault != 0 {
			c.fs.Disarm() // a raft log fault armed and not met
			c.raftFault = 0
		}
	}
	for _, c := range s.comps {
		if !c.up {
			s.restart(c)
		}
	}
}

// quiet reports whether every transaction is resolved: everyone is up, the
// coordinator has nothing in flight, no branch is in doubt, and every
// client heard an outcome.
func (s *Sim) quiet() bool {
	for _, c := range s.comps {
		if !c.up {
			return false
		}
	}
	if s.replicated() && !s.replicasQuiet() {
		return false
	}
	if s.leaderComp().coord.Inflight() > 0 {
		return false
	}
	for _, c := range s.parts() {
		if c.part.InDoubt() > 0 {
			return false
		}
	}
	for _, cl := range s.clients {
		if cl.first == nil && !cl.expired || cl.waiting {
			return false
		}
	}
	return true
}

func (s *Sim) unresolved() string {
	var parts []string
	for _, c := range s.comps {
		if !c.up {
			parts = append(parts, c.id+" down")
		}
	}
	if c := s.leaderComp(); c == nil {
		parts = append(parts, "no replica leads")
	} else if s.replicated() && !s.replicasQuiet() {
		parts = append(parts, fmt.Sprintf("the group is not idle (%d serving, leader %s: carry waiting %v, %d held, status %+v)",
			len(s.serving()), c.id, c.next != nil, len(c.held), c.rep.Status()))
	}
	if c := s.leaderComp(); c != nil && c.up && c.coord.Inflight() > 0 {
		var txs []string
		for _, cl := range s.clients {
			if st, ok := c.coord.State(cl.req.TxID); ok && (st == twopc.CoordCollecting || st == twopc.CoordCommitting) {
				txs = append(txs, cl.req.TxID+" "+st.String())
			}
		}
		parts = append(parts, fmt.Sprintf("coordinator has %d in flight: %v", c.coord.Inflight(), txs))
	}
	for _, c := range s.parts() {
		if c.up && c.part.InDoubt() > 0 {
			parts = append(parts, fmt.Sprintf("%s in doubt: %v", c.id, c.part.InDoubtTxs()))
		}
	}
	var unanswered []string
	for _, cl := range s.clients {
		if cl.first == nil && !cl.expired || cl.waiting {
			unanswered = append(unanswered, cl.req.TxID)
		}
	}
	if len(unanswered) > 0 {
		parts = append(parts, fmt.Sprintf("clients without an answer: %v", unanswered))
	}
	return strings.Join(parts, "; ")
}

// ---- the driver's hooks ----
//
// The simulator carries out Readies and recovers machines with the
// production driver (node.Carrier, node.Recover). It cuts the carry path
// through the driver's hooks: before the log (crash; or arm a disk fault,
// which the append meets: a failed write or fsync, a halt between the
// write and the fsync), after the sync, and in the middle of sending (its
// transport sends a prefix and crashes).

type stage uint8

const (
	stageNone      stage = iota
	stageBeforeLog       // nothing of the Ready is written
	stageTorn            // written, the machine loses power before the fsync returns
	stageAfterSync       // durable, nothing sent
	stageMidSend         // some but not all messages sent
	stageCompact         // durable, before the log is compacted
)

// plan is what the simulator decided for the Ready being carried out.
type plan struct {
	point Fault // the crash point, if st is not stageNone
	st    stage
	disk  Fault // a disk fault armed for its append
	armed bool  // stageMidSend: the transport's next send is cut
	sent  int   // stageMidSend: messages sent before the crash (0: not cut)
	of    int
}

// flush carries out the component's Readies, if any, with the driver.
func (s *Sim) flush(c *comp) {
	if c.role == roleReplica {
		s.drive(c)
		return
	}
	for c.up && c.m.HasReady() {
		if err := c.carrier.Carry(c.m); err != nil {
			s.carryFailed(c, err)
			return
		}
	}
}

func hasRecord(rd *twopc.Ready, t twopc.RecType) bool {
	return slices.ContainsFunc(rd.Records, func(r twopc.Record) bool { return r.Type == t })
}

func countMsgs(rd *twopc.Ready, t twopc.MsgType) int {
	n := 0
	for i := range rd.Messages {
		if rd.Messages[i].Type == t {
			n++
		}
	}
	return n
}

// hooks returns the driver hooks of c's current incarnation.
func (s *Sim) hooks(c *comp) node.Hooks {
	return node.Hooks{
		CrashBeforeLog: func(rd *twopc.Ready, sync bool) bool { return s.beforeLog(c, rd, sync) },
		CrashAfterLog:  func(rd *twopc.Ready) bool { return s.afterLog(c) },
		CrashAfterSend: func(rd *twopc.Ready) bool {
			c.plan.armed = false // armed for this Ready's send only
			return c.plan.sent > 0
		},
		CrashCompact: func(upTo uint64) bool { return s.beforeCompact(c, upTo) },
		Mutants:      s.mutants,
	}
}

// beforeLog picks the crash point of a Ready (if any) and arms the disk
// fault its append will meet (if any); true crashes before the log.
func (s *Sim) beforeLog(c *comp, rd *twopc.Ready, sync bool) bool {
	s.hash.add(uint64(c.idx), uint64(len(rd.Records)), uint64(len(rd.Messages)), uint64(len(rd.Outcomes)))
	for i := range rd.Records {
		s.hash.add(uint64(rd.Records[i].Type))
		s.hash.addString(rd.Records[i].Tx)
	}
	c.plan = plan{}
	c.plan.point, c.plan.st = s.crashPoint(c, rd, sync)
	if c.role == roleReplica && c.plan.st == stageTorn {
		// The records go to the group, not to this disk now: the raft
		// log's own disk faults are armed by tickReplica.
		c.plan.st = stageBeforeLog
	}
	if c.plan.st == stageBeforeLog {
		return true
	}
	if len(rd.Records) == 0 || c.role == roleReplica {
		return false
	}
	switch {
	case c.plan.st == stageTorn:
		c.fs.HaltAfter(1) // the write goes through, the fsync never returns
	case sync && s.on(FaultFsyncError) && s.roll(s.p.disk):
		c.fs.FailNth(wal.OpSync, 1, syscall.EIO)
		c.plan.disk = FaultFsyncError
	case sync && s.on(FaultWriteError) && s.roll(s.p.disk):
		c.fs.FailNth(wal.OpWrite, 1, syscall.EIO)
		c.plan.disk = FaultWriteError
	case sync && s.on(FaultTornTail) && s.roll(s.p.disk/2):
		c.fs.HaltAfter(1)
		c.plan.disk = FaultTornTail
	}
	return false
}

// beforeCompact may crash c before it compacts its log up to upTo, or arm
// a halt of its disk in the middle of the compaction (the carrier then
// fails with the disk's error).
func (s *Sim) beforeCompact(c *comp, upTo uint64) bool {
	if c.role == roleReplica {
		return false // the group compacts its raft logs itself
	}
	if s.healed || !s.on(CrashCompact) || !s.roll(s.p.crashPoint) {
		return false
	}
	var firsts []uint64
	for _, name := range c.fs.List("/" + c.id) {
		var first uint64
		if _, err := fmt.Sscanf(name, "%016x.wal", &first); err == nil && strings.HasSuffix(name, ".wal") {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	victims := 0
	for i := 0; i+1 < len(firsts) && firsts[i+1] <= upTo; i++ {
		victims++
	}
	c.plan.point = CrashCompact
	if victims == 0 || s.rng.IntN(2) == 0 {
		c.plan.st = stageCompact
		return true
	}
	c.fs.HaltAfter(s.rng.IntN(2 * victims)) // each removal is a remove and a directory sync
	c.plan.disk = CrashCompact
	return false
}

// afterLog runs once the Ready's records are in the log (durable if it
// synced); true crashes before any message leaves. A mid-send crash is
// armed here for the transport.
func (s *Sim) afterLog(c *comp) bool {
	if c.plan.disk != 0 || c.plan.st == stageTorn {
		s.violate("disk", "%s: log append succeeded despite an injected fault", c.id)
	}
	c.plan.armed = c.plan.st == stageMidSend
	return c.plan.st == stageAfterSync
}

// carryFailed crashes c after the driver stopped: at a crash point, or
// because its log failed.
func (s *Sim) carryFailed(c *comp, err error) {
	p := c.plan
	if errors.Is(err, node.ErrCrashed) {
		switch p.st {
		case stageBeforeLog:
			s.tracef("%s crashes at %s (before the log)", c.id, p.point)
		case stageAfterSync:
			s.tracef("%s crashes at %s (after the log)", c.id, p.point)
		case stageMidSend:
			s.tracef("%s crashes at %s (%d of %d messages sent)", c.id, p.point, p.sent, p.of)
		case stageCompact:
			s.tracef("%s crashes at %s (before compacting its log)", c.id, p.point)
		default:
			s.violate("crash", "%s: the driver crashed with no crash point chosen", c.id)
		}
		s.crash(c, p.point, false)
		return
	}
	if !errors.Is(err, wal.ErrFailed) && !errors.Is(err, wal.ErrCrashed) {
		s.violate("disk", "%s: unexpected log error: %v", c.id, err)
	}
	why := p.disk
	if p.st == stageTorn {
		why = p.point
		s.count(FaultTornTail)
	}
	if why == 0 {
		s.violate("disk", "%s: log failed with no fault injected: %v", c.id, err)
		why = FaultCrashRandom
	}
	s.tracef("%s crashes: log append failed (%s): %v", c.id, why, err)
	// A failed fsync is fatal: crash, never retry. What the disk kept of
	// the round is unknown: lose power, keeping a torn part.
	s.crash(c, why, true)
}

// crashPoint picks the crash point (if any) at which this Ready is cut;
// sync is whether the driver will sync its append.
func (s *Sim) crashPoint(c *comp, rd *twopc.Ready, sync bool) (Fault, stage) {
	if s.healed {
		return 0, stageNone
	}
	type cand struct {
		f  Fault
		st stage
	}
	var cands []cand
	durable := func(f Fault) stage {
		if s.on(FaultTornTail) && s.rng.IntN(2) == 0 {
			return stageTorn
		}
		return stageBeforeLog
	}
	if c.recovering && s.on(CrashRecoveryStart) {
		st := []stage{stageBeforeLog, stageAfterSync, stageMidSend}[s.rng.IntN(3)]
		cands = append(cands, cand{CrashRecoveryStart, st})
	}
	if c.role == roleCoord || c.role == roleReplica {
		if hasRecord(rd, twopc.RecCommit) {
			cands = append(cands,
				cand{CrashCoordBeforeCommitDurable, durable(CrashCoordBeforeCommitDurable)},
				cand{CrashCoordAfterCommitDurable, stageAfterSync})
			if countMsgs(rd, twopc.MsgCommit) >= 2 {
				cands = append(cands, cand{CrashCoordMidCommitSend, stageMidSend})
			}
		}
		if hasRecord(rd, twopc.RecEnd) {
			cands = append(cands, cand{CrashCoordAfterAcksBeforeEnd, stageBeforeLog})
		}
		if hasRecord(rd, twopc.RecAbort) && countMsgs(rd, twopc.MsgAbort) >= 2 {
			cands = append(cands, cand{CrashCoordMidAbortSend, stageMidSend})
		}
	} else {
		if hasRecord(rd, twopc.RecPrepared) {
			cands = append(cands,
				cand{CrashPartBeforePreparedDurable, durable(CrashPartBeforePreparedDurable)},
				cand{CrashPartAfterPreparedDurable, stageAfterSync})
		}
		if hasRecord(rd, twopc.RecCommitted) {
			cands = append(cands,
				cand{CrashPartBeforeCommittedDurable, durable(CrashPartBeforeCommittedDurable)},
				cand{CrashPartAfterCommittedDurable, stageAfterSync})
		}
	}
	for _, cd := range cands {
		if s.on(cd.f) && s.roll(s.p.crashPoint) {
			st := cd.st
			if st == stageMidSend && len(rd.Messages) < 2 {
				st = stageAfterSync
			}
			if st == stageTorn && (len(rd.Records) == 0 || !sync) {
				st = stageBeforeLog
			}
			return cd.f, st
		}
	}
	return 0, stageNone
}

// transport is a component's side of the simulated network. It crashes in
// the middle of a send when the Ready's plan says so: a prefix of the
// messages leaves, the rest never does.
type transport struct {
	s *Sim
	c *comp
}

func (t transport) Send(msgs []twopc.Message) {
	s, c := t.s, t.c
	if c.plan.armed {
		c.plan.armed = false
		if len(msgs) < 2 {
			s.send(c, msgs)
			return
		}
		k := 1 + s.rng.IntN(len(msgs)-1)
		c.plan.sent, c.plan.of = k, len(msgs)
		msgs = msgs[:k]
	}
	s.send(c, msgs)
}

// observe sees every record the driver appended. A deadlock victim must be
// on the cycle it was chosen from, and be the transaction aborted.
// noteRestoredOutcomes sets finAt of every client whose outcome c's
// restored machine holds but whose END or ABORT the simulator never saw
// appended (a carry that failed after writing it, its bytes kept by the
// disk): as far as the coordinator's running time goes, the outcome
// entered its table at this restart.
func (s *Sim) noteRestoredOutcomes(c *comp) {
	for _, cl := range s.clients {
		if cl.finAt != 0 {
			continue
		}
		if st, ok := c.coord.State(cl.req.TxID); ok && (st == twopc.CoordCommitted || st == twopc.CoordAborted) {
			cl.finAt = s.now
		}
	}
}

func (s *Sim) observe(c *comp) func(*twopc.Record) {
	return func(r *twopc.Record) {
		if c.coord != nil && (r.Type == twopc.RecEnd || r.Type == twopc.RecAbort) {
			if cl := s.byTx[r.Tx]; cl != nil {
				cl.finAt = s.now
			}
		}
		cycle, victim, ok := twopc.ParseCycleReason(r.Reason)
		if !ok {
			return
		}
		if r.Tx != victim || !slices.Contains(cycle, victim) {
			s.violate("deadlock", "%s: %s record aborts %s for %q: the victim must be on the cycle it names, and be the transaction aborted", c.id, r.Type, r.Tx, r.Reason)
		}
	}
}

// crash stops c as a crash would: its memory is gone; its disk keeps what
// was durable (a process crash keeps the page cache too; a power loss
// keeps only synced data, or with torn tails a part of the rest).
func (s *Sim) crash(c *comp, why Fault, powerLoss bool) {
	if !c.up {
		return
	}
	s.count(why)
	s.res.Crashes++
	if c.part != nil {
		s.res.Forgotten += c.part.Forgotten()
	}
	if c.log != nil && c.log.LastSeq() > c.log.DurableSeq() {
		s.count(FaultLoseUnsynced)
	}
	if powerLoss || s.on(FaultPowerLoss) && s.roll(s.p.power) {
		mode := wal.CrashSyncedOnly
		if s.p.on.Has(FaultTornTail) {
			mode = []wal.CrashMode{wal.CrashSyncedOnly, wal.CrashTornPrefix, wal.CrashTornZeros, wal.CrashTornGarbage}[s.rng.IntN(4)]
		}
		c.fs.Crash(mode)
		s.count(FaultPowerLoss)
	} else {
		c.fs.Restart()
	}
	c.up = false
	c.inc++
	if c.role == roleReplica {
		s.dropLead(c)
		c.rep, c.newLead, c.raftFault = nil, nil, 0
	}
	if c.coord != nil {
		s.res.TxRestarts += c.coord.DeadlockStats().Restarts
	}
	c.log, c.coord, c.part, c.res, c.m, c.carrier = nil, nil, nil, nil, nil, nil
	down := 0
	for _, x := range s.comps {
		if !x.up {
			down++
		}
	}
	if down >= 2 {
		s.res.MultiDown++
	}
	s.res.MaxDown = max(s.res.MaxDown, down)
	s.tracef("%s down (%s); %d down", c.id, why, down)
	at := s.now + 1 + uint64(s.rng.IntN(int(s.p.maxDown)))
	if !s.healed && at > s.cfg.FaultTicks {
		at = s.cfg.FaultTicks // heal brings it back anyway
	}
	s.schedule(&event{at: at, kind: evRestart, comp: c.idx, gen: c.inc})
}

func (s *Sim) logConfig(c *comp, fsys wal.FS) wal.Config {
	return wal.Config{Dir: "/" + c.id, FS: fsys, SegmentSize: s.p.segSize}
}

// openCalls returns how many disk calls opening and replaying c's log
// takes (on a copy of its disk). For the coordinator it is its whole
// recovery (coordinator.Recover): loading a snapshot and then
// replaying only the records after it may take fewer calls than replaying
// the whole log, and a halt planned past the last call would outlive the
// recovery.
func (s *Sim) openCalls(c *comp) int {
	clone := c.fs.Clone()
	before := clone.Calls()
	if c.role == roleCoord {
		m, err := twopc.NewCoordinator(s.coordMachineConfig())
		if err != nil {
			return 0
		}
		l, _, err := coordinator.Recover(s.logConfig(c, clone), m, node.Hooks{})
		n := clone.Calls() - before
		if err == nil {
			l.Close()
		}
		return n
	}
	l, err := wal.Open(s.logConfig(c, clone))
	if err == nil {
		_ = node.Replay(l, func(twopc.Record) error { return nil }, node.Hooks{})
	}
	return clone.Calls() - before
}

// restart recovers c from its disk with the driver's node.Recover: open
// the log (cutting a torn tail), replay it into a fresh machine over a
// fresh Resource, Start; then the driver carries out the work Start
// queued. A crash may hit during this, too.
func (s *Sim) restart(c *comp) {
	if c.up {
		return
	}
	if c.role == roleReplica {
		s.restartReplica(c)
		return
	}
	halt := false
	if s.on(CrashRecoveryOpen) && s.roll(s.p.recovery) {
		if n := s.openCalls(c); n > 0 {
			c.fs.HaltAfter(s.rng.IntN(n))
			halt = true
		}
	}
	recoveryCrash := func(err error) {
		s.tracef("%s crashes during recovery: %v", c.id, err)
		c.up = true // so that crash counts and schedules it
		c.log, c.coord, c.part, c.res, c.m = nil, nil, nil, nil, nil
		s.crash(c, CrashRecoveryOpen, s.rng.IntN(2) == 0)
	}
	m, err := s.newMachine(c)
	if err != nil {
		s.violate("recovery", "%s: %v", c.id, err)
		s.stopErr = err
		return
	}
	hooks := s.hooks(c)
	var log *wal.Log
	var ckpts []uint64
	if c.role == rolePart {
		var after uint64
		after, err = s.loadSnapshot(c, c.fs, c.part, c.res)
		if err == nil {
			log, err = node.RecoverAfter(s.logConfig(c, c.fs), m, hooks, after)
		}
	} else {
		var rec coordinator.Recovered
		log, rec, err = coordinator.Recover(s.logConfig(c, c.fs), c.coord, hooks)
		if err == nil && rec.Snapshot > 0 {
			s.res.CoordSnapshotLoads++
		}
	}
	if err != nil {
		if halt && c.fs.Halted() {
			recoveryCrash(err)
			return
		}
		s.violate("recovery", "%s: %v", c.id, err)
		s.stopErr = err
		return
	}
	if halt && c.fs.Halted() {
		recoveryCrash(errors.New("disk halted"))
		return
	}
	c.log = log
	c.carrier = &node.Carrier{ID: c.id, Log: log, Transport: transport{s, c}, OnRecord: s.observe(c), Hooks: hooks, Checkpoints: ckpts}
	if c.role == roleCoord {
		c.carrier.OnOutcomes = s.report
		c.carrier.NoCheckpointCompaction = true // compacted after its snapshots, as coordinator.Open's
	}
	c.up = true
	s.res.Restarts++
	s.tracef("%s up (incarnation %d)", c.id, c.inc)
	if c.coord != nil {
		s.noteRestoredOutcomes(c)
	}
	if c.res != nil {
		if err := c.res.check(); err != nil {
			s.violate("conservation", "%s after recovery: %v", c.id, err)
		}
	}
	c.recovering = true
	s.flush(c)
	c.recovering = false
}

// newMachine gives c a fresh machine (and a fresh Resource for a
// participant), as a process does when it starts.
func (s *Sim) newMachine(c *comp) (node.Restorer, error) {
	if c.role == roleCoord {
		m, err := twopc.NewCoordinator(s.coordMachineConfig())
		if err != nil {
			return nil, err
		}
		c.coord, c.m = m, m
		return m, nil
	}
	c.res = s.newResource(c.id)
	cfg := twopc.ParticipantConfig{
		ID: c.id, Coordinator: twopc.CoordinatorID, LockTimeout: lockTimeout,
		InquireAfter: inquireAfter, InquireMax: inquireMax, Rand: s.rng.Uint64, Deadlock: s.p.deadlock,
		Retention: twopc.ParticipantRetention(s.p.retention),
	}
	m, err := twopc.NewParticipant(cfg, c.res)
	if err != nil {
		return nil, err
	}
	c.part, c.m = m, m
	return m, nil
}

// ---- the network ----

// cutIdx reports whether the partition separates components a and b.
func (s *Sim) cutIdx(a, b int) bool {
	return s.partitioned >= 0 && a != b && (a == s.partitioned || b == s.partitioned)
}

// parts returns the participants.
func (s *Sim) parts() []*comp {
	return s.comps[len(s.comps)-len(services.IDs()):]
}

// send puts from's messages on the network.
func (s *Sim) send(from *comp, msgs []twopc.Message) {
	for _, m := range msgs {
		s.res.Messages++
		if !s.healed {
			if to := s.byID[m.To]; s.partitioned == from.idx || to != nil && s.cutIdx(from.idx, to.idx) {
				continue
			}
			if s.on(FaultDrop) && s.roll(s.p.drop) {
				s.count(FaultDrop)
				s.tracef("drop %s", m)
				continue
			}
		}
		s.schedule(&event{at: s.now + s.latency(), kind: evDeliver, msg: m, from: from.idx})
		if s.on(FaultDuplicate) && s.roll(s.p.dup) {
			s.count(FaultDuplicate)
			s.schedule(&event{at: s.now + s.latency(), kind: evDeliver, msg: m, from: from.idx})
		}
	}
}

// latency is a message's time on the network: 1 to 3 ticks, and up to 60
// more when it is delayed, but always less than half the coordinator's
// retention when outcomes are forgotten. That is the assumption forgetting
// rests on (docs/ARCHITECTURE.md, "Bounded state"): no message outlives
// the window. A participant's INQUIRE delayed past the 3W after which the
// coordinator no longer knows the id at all would be answered with a
// presumed ABORT, remembered, about a transaction that committed (seed
// 4082650 of a campaign, with a retention of about 20 ticks and an
// INQUIRE delayed 60: every service committed, the coordinator's table
// said ABORTED). In production the window is hours and a message is a
// gRPC call with a deadline of seconds.
func (s *Sim) latency() uint64 {
	d := 1 + uint64(s.rng.IntN(3))
	if s.on(FaultDelay) && s.roll(s.p.delay) {
		s.count(FaultDelay)
		d += uint64(s.rng.IntN(s.maxDelay()))
	}
	return d
}

// maxDelay bounds the extra ticks of a delayed message (latency).
func (s *Sim) maxDelay() int {
	if s.p.retention > 0 {
		return int(min(60, s.p.retention/2-3))
	}
	return 60
}

func (s *Sim) deliver(e *event) {
	m := e.msg
	c := s.byID[m.To]
	s.hash.add(uint64(m.Type), m.Epoch, uint64(m.Vote))
	s.hash.addString(m.Tx)
	s.hash.addString(m.From)
	if c == nil && m.To == twopc.CoordinatorID && s.replicated() {
		c = s.pickCoord(e.from)
	}
	if c == nil || !c.up || s.cutIdx(e.from, c.idx) {
		return
	}
	if c.role == roleReplica && c.next != nil {
		c.held = append(c.held, m) // its machine is in the middle of a carry
		return
	}
	s.tracef("deliver %s to %s", m, c.id)
	c.m.Step(m)
	s.flush(c)
}
