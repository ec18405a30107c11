// Package replica replicates the coordinator: 2F+1 coordinator replicas
// form one Raft group (go.etcd.io/raft/v3), and the coordinator's log
// records are the group's entries, so that a transaction never waits for a
// dead coordinator (the idea of Gray and Lamport's Paxos Commit: the
// commit decision goes through consensus, not one process's disk).
//
// Raft is etcd's: a pure state machine (RawNode: Step, Tick, Ready,
// Advance) that this package drives the way package node drives the twopc
// machines. This package owns what raft leaves to its user: the raft log's
// storage (raft.MemoryStorage in front of a wal.Log, see storage.go), the
// transport between replicas (Transport), the ticks and the Ready loop.
//
// Only the leader runs the twopc coordinator machine. Once its barrier
// entry is applied (every entry of an earlier term is then in its log) it
// restores a fresh machine from the committed records, exactly as a
// restarted coordinator replays its log (presumed abort for the undecided,
// COMMIT resent where ACKs are missing), starts it with the raft term as
// its epoch floor, and runs it on a coordinator.Coordinator whose log is
// the group (Log): a Ready's records are one proposal, and the carrier's
// "sync" waits until that proposal is committed and applied. A leader that
// loses its leadership fails every proposal still waiting: nothing of
// those Readies is sent or reported, and its machine is dropped. Followers
// keep only the raft log.
//
// Every replica applies the committed records to a machine of its own,
// snapshots it and compacts its raft log by itself (snapshot.go).
package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Transport carries raft messages between the replicas of a group. Send
// must not block (drop what cannot be sent: raft resends).
type Transport interface {
	Send(msgs []*pb.Message)
}

// Config configures one replica.
type Config struct {
	// ID is this replica's id in the group (1..N); Peers are every
	// replica's id, this one's included.
	ID    uint64
	Peers []uint64
	// Log configures the raft log's wal; an empty Dir keeps the raft log
	// in memory only (tests).
	Log wal.Config
	// Coordinator configures the coordinator the leader runs (Machine,
	// Tick, Network, callbacks, Hooks, Logger; Dir and Log are not used)
	// and when every replica snapshots its state (Snapshot; not with a
	// raft log in memory). A stepped replica counts Snapshot.Every in
	// raft ticks.
	Coordinator coordinator.Config
	// Transport sends raft messages to the other replicas.
	Transport Transport
	// Tick is the length of a raft tick (default 10ms); a follower that
	// hears nothing from its leader for ElectionTicks (default 10) ticks
	// starts an election; the leader sends heartbeats every
	// HeartbeatTicks (default 1).
	Tick                          time.Duration
	ElectionTicks, HeartbeatTicks int
	// SnapshotHooks cut the writing of a snapshot file (Step) and the
	// compaction after it (BeforeCompact) for crash tests; MayCompact is
	// not used.
	SnapshotHooks node.SnapshotHooks
	// HoldTicks is how many of the leader's machine ticks (Coordinator's
	// Tick) an unforced record may wait for a forced one to carry it to
	// the group (see Log; default: one raft tick's worth).
	HoldTicks int
	Logger    *slog.Logger
	// Lead, if set, makes this a stepped replica: one goroutine drives it
	// with Tick, Step and Turn instead of Run (the deterministic simulator
	// drives its replicas so). Each leadership's machine, once restored
	// and started, is handed to Lead instead of being run on a
	// coordinator.Coordinator; the driver carries out its Readies on the
	// Lead's Log (node.Carrier), whose appends wait for the group by
	// calling the Log's yield function (SetYield) instead of blocking.
	// Lead is called in the middle of a Turn: it must only keep its
	// argument.
	Lead func(*Lead)
}

// Lead is one leadership of a stepped replica (Config.Lead): the machine
// restored from the group's state at the barrier (Index) and started at an
// epoch of at least Term, and the Log its records go to. Done is closed
// when the leadership ends.
type Lead struct {
	Term    uint64
	Machine *twopc.Coordinator
	Log     *Log
	Index   uint64
	Done    <-chan struct{}
	run     *leaderRun
}

// NotLeaderError is returned by a replica that is not the group's leader
// (or is, and has not restored its coordinator yet): ask Leader (0 if
// none is known).
type NotLeaderError struct {
	ID, Leader uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 || e.Leader == e.ID {
		return fmt.Sprintf("replica %d: not the leader (no leader known)", e.ID)
	}
	return fmt.Sprintf("replica %d: not the leader (leader: replica %d)", e.ID, e.Leader)
}

// ErrStopped is returned once the replica has stopped.
var ErrStopped = errors.New("replica: stopped")

// Status is a replica's view of the group.
type Status struct {
	ID, Term, Lead, Applied, Commit uint64
	// Compacted is the index up to which the raft log was compacted (its
	// snapshot's index).
	Compacted uint64
	// State is "leader", "follower", "candidate" or "pre-candidate".
	State string
	// Serving says this replica's coordinator is up (it is the leader and
	// has restored its machine).
	Serving bool
}

// Replica is one member of the coordinator group.
type Replica struct {
	cfg  Config
	rn   *raft.RawNode
	st   *storage
	recv chan *pb.Message
	prop chan *proposal
	call chan func()
	done chan struct{}

	// The raft loop's own state.
	applied  uint64
	snapshot uint64             // index of the raft log's snapshot
	state    *twopc.Coordinator // the group's state at applied (never started)
	snap     snapState
	fatal    error // a raft log failure off the loop, returned by the next Turn
	ctx      context.Context
	cs       *pb.ConfState
	term     uint64
	leading  bool
	serial   uint64
	pending  map[uint64]*proposal // by serial, this term's
	reads    map[uint64]*readReq  // ReadIndex requests by id
	readq    []*readReq           // answered by raft, waiting for applied
	readSer  uint64
	run      *leaderRun

	mu struct {
		sync.Mutex
		status Status
		run    *leaderRun
	}
}

// leaderRun is one leadership: the coordinator a leader runs in one term.
type leaderRun struct {
	term    uint64
	elected time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	ready   chan struct{} // closed once coord is set (or the run failed)
	coord   *coordinator.Coordinator
	err     error
}

// serving reports whether the run's coordinator is up.
func (run *leaderRun) serving() bool {
	if run == nil {
		return false
	}
	select {
	case <-run.ready:
		return run.err == nil && run.ctx.Err() == nil
	default:
		return false
	}
}

// proposal is a Ready's records on their way through raft.
type proposal struct {
	run     *leaderRun
	data    []byte
	records int
	done    chan propResult
	// barrier, if set, is called on the raft loop with the index once the
	// entry is applied (instead of done).
	barrier func(index uint64)
}

type propResult struct {
	index uint64
	err   error
}

type readReq struct {
	index uint64
	done  chan error
}

// New opens the replica's raft log (or creates a new group's) and returns
// the replica. Nothing runs until Run.
func New(cfg Config) (*Replica, error) {
	if cfg.ID == 0 || !slices.Contains(cfg.Peers, cfg.ID) {
		return nil, fmt.Errorf("replica: id %d is not one of the peers %v", cfg.ID, cfg.Peers)
	}
	if cfg.Transport == nil {
		return nil, errors.New("replica: no transport")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	if cfg.ElectionTicks <= 0 {
		cfg.ElectionTicks = 10
	}
	if cfg.HeartbeatTicks <= 0 {
		cfg.HeartbeatTicks = 1
	}
	if cfg.HeartbeatTicks >= cfg.ElectionTicks {
		return nil, fmt.Errorf("replica: heartbeat ticks %d must be fewer than election ticks %d", cfg.HeartbeatTicks, cfg.ElectionTicks)
	}
	if cfg.HoldTicks <= 0 {
		cfg.HoldTicks = 1
		if mt := cfg.Coordinator.Tick; mt > 0 && cfg.Tick > mt {
			cfg.HoldTicks = int(cfg.Tick / mt)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Coordinator.Logger == nil {
		cfg.Coordinator.Logger = cfg.Logger
	}
	st, err := openStorage(cfg.Log, slices.Clone(cfg.Peers))
	if err != nil {
		return nil, err
	}
	snap, _ := st.Snapshot()
	state, at, fromFile, skipped, err := loadState(cfg.Log, st, cfg.Coordinator.Machine)
	if err != nil {
		st.close()
		return nil, err
	}
	if si := snap.GetMetadata().GetIndex(); fromFile && at > si && statefulSnap(snap) && wal.CheckSnapshot(fsysOf(cfg.Log), cfg.Log.Dir, si) != nil {
		// The raft log's snapshot lost its file (damaged, or left by an
		// older build that pruned it before compacting): a replica behind
		// would be sent an index no file holds. The raft log moves to the
		// file just loaded.
		if err := st.compact(at, snap.GetMetadata().GetConfState(), fileData); err != nil {
			st.close()
			return nil, fmt.Errorf("replica: compact raft log: %w", err)
		}
		snap, _ = st.Snapshot()
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   st,
		Applied:                   at,
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true, // a leader cut off from a majority steps down
		PreVote:                   true, // a replica cut off does not disrupt the group when it returns
		ReadOnlyOption:            raft.ReadOnlySafe,
		Logger:                    &raft.DefaultLogger{Logger: stdlog.New(io.Discard, "", 0)},
	})
	if err != nil {
		st.close()
		return nil, fmt.Errorf("replica: %w", err)
	}
	r := &Replica{
		cfg:      cfg,
		rn:       rn,
		st:       st,
		recv:     make(chan *pb.Message, 4096),
		prop:     make(chan *proposal, 1024),
		call:     make(chan func(), 256),
		done:     make(chan struct{}),
		applied:  at,
		snapshot: snap.GetMetadata().GetIndex(),
		state:    state,
		ctx:      context.Background(),
		cs:       snap.GetMetadata().GetConfState(),
		pending:  map[uint64]*proposal{},
		reads:    map[uint64]*readReq{},
	}
	r.snap.cfg = cfg.Coordinator.Snapshot.WithReplicaDefaults()
	if r.snap.cfg.Every > 0 {
		r.snap.every = max(1, int(r.snap.cfg.Every/cfg.Tick))
	}
	if fromFile {
		r.snap.stats.Loaded = at
	}
	r.snap.stats.Skipped = skipped
	r.mu.status = Status{ID: cfg.ID, State: "follower", Applied: r.applied}
	return r, nil
}

// Receive hands the replica a raft message from another replica. It never
// blocks: a message that does not fit is dropped (raft resends).
func (r *Replica) Receive(m *pb.Message) {
	select {
	case r.recv <- m:
	default:
	}
}

// Run drives raft until ctx ends, then stops the coordinator (if leading)
// and closes the raft log. A failed raft log write is returned: the
// replica must be restarted from its log.
func (r *Replica) Run(ctx context.Context) error {
	defer close(r.done)
	defer r.st.close()
	r.ctx = ctx
	ticker := time.NewTicker(r.cfg.Tick)
	defer ticker.Stop()
	err := r.loop(ctx, ticker.C)
	r.stepDown(ErrStopped)
	if err != nil {
		r.cfg.Logger.Error("replica stopped", "id", r.cfg.ID, "err", err)
	}
	return err
}

func (r *Replica) loop(ctx context.Context, tick <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			r.rn.Tick()
			r.snap.ticks++
		case m := <-r.recv:
			r.receive(m)
		case p := <-r.prop:
			r.propose(p)
		case f := <-r.call:
			f()
		}
	drain:
		for i := 0; i < 1024; i++ {
			select {
			case m := <-r.recv:
				r.receive(m)
			case p := <-r.prop:
				r.propose(p)
			case f := <-r.call:
				f()
			default:
				break drain
			}
		}
		if err := r.Turn(); err != nil {
			return err
		}
	}
}

// Tick advances a stepped replica's raft clock by one tick, then Turns.
func (r *Replica) Tick() error {
	r.rn.Tick()
	r.snap.ticks++
	return r.Turn()
}

// Step hands a stepped replica one raft message, then Turns.
func (r *Replica) Step(m *pb.Message) error {
	r.receive(m)
	return r.Turn()
}

// Turn carries out raft's Readies (the raft log written, messages sent,
// committed entries applied) and follows a change of leadership. An error
// is the raft log's: the replica must stop and restart from its disk.
// Run's loop calls it after every batch; a stepped replica's driver calls
// it (through Tick and Step, and after its machine proposed).
func (r *Replica) Turn() error {
	if r.fatal != nil {
		return r.fatal
	}
	for r.rn.HasReady() {
		if err := r.handleReady(); err != nil {
			return err
		}
	}
	// A fetched snapshot raft did not install in this turn (stale by
	// now) is not kept.
	r.snap.fetched = nil
	r.maybeSnapshot()
	r.leadership()
	return r.fatal
}

// Resign ends a stepped replica's leadership l after its driver stopped
// running l's machine (its Log failed): if the replica still leads, a new
// barrier restores a fresh machine at its next Turn.
func (r *Replica) Resign(l *Lead) {
	if r.run == l.run {
		r.stepDown(errors.New("replica: coordinator stopped"))
	}
}

// Idle reports whether this replica leads, serves, and has applied every
// entry of its log: nothing it proposed is still on its way.
func (r *Replica) Idle() bool {
	return r.leading && r.run.serving() && len(r.pending) == 0 && r.applied == r.rn.BasicStatus().GetCommit() &&
		r.applied == r.lastIndex()
}

func (r *Replica) lastIndex() uint64 {
	i, _ := r.st.LastIndex()
	return i
}

// Close ends a stepped replica: its leadership, if any, and its raft log.
func (r *Replica) Close() error {
	r.stepDown(ErrStopped)
	return r.st.close()
}

func (r *Replica) propose(p *proposal) {
	if !r.leading || p.run != r.run || p.run.term != r.term {
		r.fail(p, r.notLeader())
		return
	}
	r.serial++
	putTag(p.data, r.term, r.serial)
	if err := r.rn.Propose(p.data); err != nil {
		r.fail(p, fmt.Errorf("replica %d: proposal dropped: %w", r.cfg.ID, err))
		return
	}
	r.pending[r.serial] = p
}

func (r *Replica) fail(p *proposal, err error) {
	if p.done != nil {
		p.done <- propResult{err: err}
	}
}

func (r *Replica) notLeader() error {
	return &NotLeaderError{ID: r.cfg.ID, Leader: r.rn.BasicStatus().Lead}
}

func (r *Replica) handleReady() error {
	rd := r.rn.Ready()
	// A leader may send its appends while it writes the same entries to
	// its own disk (the Raft thesis, 10.2.1; etcd raft's Ready contract):
	// a majority still needs them durable before they commit. Everything
	// else waits for the disk: a follower's acknowledgement, and any
	// message after a change of term or vote.
	early := r.leading && raft.IsEmptySnap(rd.Snapshot) &&
		(rd.HardState == nil || (rd.HardState.GetTerm() == r.st.hs.GetTerm() && rd.HardState.GetVote() == r.st.hs.GetVote()))
	if early {
		r.send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := r.install(rd.Snapshot); err != nil {
			return err
		}
	}
	if err := r.st.save(rd.Snapshot, rd.HardState, rd.Entries, rd.MustSync); err != nil {
		return err
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		md := rd.Snapshot.GetMetadata()
		r.applied, r.snapshot = md.GetIndex(), md.GetIndex()
		r.cs = md.GetConfState()
		if err := r.installed(rd.Snapshot); err != nil {
			return err
		}
	}
	if !early {
		r.send(rd.Messages)
	}
	if err := r.apply(rd.CommittedEntries); err != nil {
		return err
	}
	for _, rs := range rd.ReadStates {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.RequestCtx)
		if q := r.reads[id]; q != nil {
			delete(r.reads, id)
			q.index = rs.Index
			r.readq = append(r.readq, q)
		}
	}
	r.answerReads()
	r.rn.Advance(rd)
	return nil
}

func (r *Replica) send(msgs []*pb.Message) {
	if len(msgs) == 0 {
		return
	}
	r.cfg.Transport.Send(msgs)
	for _, m := range msgs {
		if m.GetType() == pb.MsgSnap {
			// The follower fetches the file itself (snapshot.go); until
			// it has installed it, raft finds it behind and sends the
			// snapshot again.
			r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFinish)
		}
	}
}

func (r *Replica) apply(ents []*pb.Entry) error {
	for _, e := range ents {
		r.applied = e.GetIndex()
		switch e.GetType() {
		case pb.EntryConfChange:
			var cc pb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("replica: conf change at %d: %w", e.GetIndex(), err)
			}
			r.cs = r.rn.ApplyConfChange(&cc)
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("replica: conf change at %d: %w", e.GetIndex(), err)
			}
			r.cs = r.rn.ApplyConfChange(&cc)
		case pb.EntryNormal:
			term, serial, ok := tagOf(e.GetData())
			if !ok {
				continue
			}
			if err := r.applyState(e); err != nil {
				return fmt.Errorf("replica %d: apply entry %d: %w", r.cfg.ID, e.GetIndex(), err)
			}
			if term == r.term && r.leading {
				if p := r.pending[serial]; p != nil {
					delete(r.pending, serial)
					if p.barrier != nil {
						p.barrier(e.GetIndex())
					} else {
						p.done <- propResult{index: e.GetIndex()}
					}
				}
			}
		}
	}
	return nil
}

func (r *Replica) answerReads() {
	if len(r.readq) == 0 {
		return
	}
	keep := r.readq[:0]
	for _, q := range r.readq {
		if q.index <= r.applied {
			q.done <- nil
		} else {
			keep = append(keep, q)
		}
	}
	clear(r.readq[len(keep):])
	r.readq = keep
}

// leadership starts a coordinator when this replica leads without one, and
// stops it when the replica no longer leads in the run's term; it
// publishes the status.
func (r *Replica) leadership() {
	bs := r.rn.BasicStatus()
	leading := bs.RaftState == raft.StateLeader
	if bs.GetTerm() != r.term || !leading {
		if r.run != nil || len(r.pending) > 0 || len(r.reads) > 0 || len(r.readq) > 0 {
			r.stepDown(r.notLeader())
		}
	}
	r.term, r.leading = bs.GetTerm(), leading
	if leading && r.run == nil {
		r.startRun()
	}
	r.mu.Lock()
	r.mu.status = Status{ID: r.cfg.ID, Term: bs.GetTerm(), Lead: bs.Lead, Applied: r.applied, Commit: bs.GetCommit(),
		State: stateName(bs.RaftState), Serving: r.run.serving(), Compacted: r.snapshot}
	r.mu.run = r.run
	r.mu.Unlock()
}

func stateName(s raft.StateType) string {
	switch s {
	case raft.StateLeader:
		return "leader"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "follower"
}

// stepDown fails every waiting proposal and read with err and stops the
// coordinator: nothing of the Readies still waiting is sent or reported.
func (r *Replica) stepDown(err error) {
	for s, p := range r.pending {
		delete(r.pending, s)
		if p.barrier == nil {
			r.fail(p, err)
		}
	}
	for id, q := range r.reads {
		delete(r.reads, id)
		q.done <- err
	}
	for _, q := range r.readq {
		q.done <- err
	}
	r.readq = r.readq[:0]
	if run := r.run; run != nil {
		r.run = nil
		run.cancel()
		r.cfg.Logger.Warn("replica stopped leading", "id", r.cfg.ID, "term", run.term)
	}
	r.mu.Lock()
	r.mu.run = nil
	r.mu.Unlock()
}

// startRun proposes the new leadership's barrier; once it is applied, the
// machine is restored from a capture of the state at the barrier (off the
// raft loop) and the coordinator starts.
func (r *Replica) startRun() {
	ctx, cancel := context.WithCancel(context.Background())
	run := &leaderRun{term: r.term, ctx: ctx, cancel: cancel, ready: make(chan struct{}), elected: time.Now()}
	r.run = run
	p := &proposal{run: run, data: make([]byte, tagSize)}
	p.barrier = func(index uint64) {
		enc, err := r.state.SnapshotDeferred()
		if err != nil {
			r.cfg.Logger.Error("replica: capture the state for the leader", "err", err)
			r.stepDown(err)
			return
		}
		if r.cfg.Lead != nil {
			r.lead(run, enc, index)
			return
		}
		go r.serve(run, enc, index)
	}
	r.propose(p)
	if _, ok := r.pending[r.serial]; !ok || r.pending[r.serial] != p {
		// Dropped (no leader any more, or a leader transfer): try again
		// on a later turn.
		r.run = nil
		cancel()
	}
}

// serve restores a machine from the capture enc of the state at the
// barrier (index), starts it and runs the coordinator until the run ends.
func (r *Replica) serve(run *leaderRun, enc func() []byte, index uint64) {
	start := time.Now()
	m, err := restore(r.cfg.Coordinator.Machine, enc)
	if err == nil {
		m.StartAtLeast(run.term)
		var c *coordinator.Coordinator
		c, err = coordinator.New(r.cfg.Coordinator, m, r.newLog(run), nil)
		if err == nil {
			run.coord = c
		}
	}
	run.err = err
	close(run.ready)
	if err != nil {
		r.cfg.Logger.Error("replica: restore the coordinator", "id", r.cfg.ID, "err", err)
		r.post(func() {
			if r.run == run {
				r.stepDown(err)
			}
		})
		return
	}
	r.cfg.Logger.Info("replica leads", "id", r.cfg.ID, "term", run.term, "index", index,
		"restore", time.Since(start), "since_elected", time.Since(run.elected))
	if err := run.coord.Run(run.ctx); err != nil && run.ctx.Err() == nil {
		r.cfg.Logger.Warn("replica: coordinator stopped", "id", r.cfg.ID, "term", run.term, "err", err)
	}
	run.coord.Close()
	// Still leading with no coordinator (a proposal dropped while the
	// leadership stays): start over with a new barrier.
	r.post(func() {
		if r.run == run {
			r.stepDown(errors.New("replica: coordinator stopped"))
		}
	})
}

// lead restores a stepped replica's machine from the capture enc and
// hands it to Config.Lead (on the raft loop).
func (r *Replica) lead(run *leaderRun, enc func() []byte, index uint64) {
	m, err := restore(r.cfg.Coordinator.Machine, enc)
	run.err = err
	close(run.ready)
	if err != nil {
		r.cfg.Logger.Error("replica: restore the coordinator", "id", r.cfg.ID, "err", err)
		r.stepDown(err)
		return
	}
	m.StartAtLeast(run.term)
	r.cfg.Lead(&Lead{Term: run.term, Machine: m, Log: r.newLog(run), Index: index, Done: run.ctx.Done(), run: run})
}

// eachEntryRecord decodes the coordinator records of the normal entries
// in ents and calls fn with each and its seq (the entry's raft index,
// shifted, plus the record's place in the entry, as Log numbers them).
func eachEntryRecord(ents []*pb.Entry, fn func(seq uint64, rec twopc.Record) error) error {
	for _, e := range ents {
		if e.GetType() != pb.EntryNormal {
			continue
		}
		i := uint64(0)
		err := eachRecord(e.GetData(), func(typ uint8, b []byte) error {
			seq := e.GetIndex()<<seqShift | i
			i++
			rec, err := twopc.DecodeRecord(twopc.RecType(typ), b)
			if err != nil {
				return fmt.Errorf("raft entry %d: %w", e.GetIndex(), err)
			}
			return fn(seq, rec)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// restore builds a fresh machine (not started) from a capture of a state.
func restore(mc twopc.CoordinatorConfig, enc func() []byte) (*twopc.Coordinator, error) {
	m, err := twopc.NewCoordinator(mc)
	if err != nil {
		return nil, err
	}
	if err := m.RestoreSnapshot(enc()); err != nil {
		return nil, err
	}
	return m, nil
}

// post runs f on the raft loop (dropped once the replica stopped).
func (r *Replica) post(f func()) {
	select {
	case r.call <- f:
	case <-r.done:
	}
}

// do runs f on the raft loop and waits for it.
func (r *Replica) do(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case r.call <- func() { f(); close(ran) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrStopped
	}
	select {
	case <-ran:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrStopped
	}
}

// Status returns the replica's view of the group (as of its last turn).
func (r *Replica) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.status
}

// Records calls fn for every committed record of this replica's raft log
// about tx (a follower's too), in log order, with its seq (the raft index
// of its entry, shifted, plus its place in the entry, as the leader's Log
// numbers them). The raft log holds what the last compaction kept: the
// entries after the older of the two snapshot files kept.
// It reads raft's in-memory log while the replica runs.
func (r *Replica) Records(tx string, fn func(seq uint64, rec twopc.Record)) error {
	first, err := r.st.FirstIndex()
	if err != nil {
		return err
	}
	commit := r.Status().Commit
	if commit < first {
		return nil
	}
	ents, err := r.st.Entries(first, commit+1, math.MaxUint64)
	if err != nil {
		return fmt.Errorf("replica %d: read raft log: %w", r.cfg.ID, err)
	}
	err = eachEntryRecord(ents, func(seq uint64, rec twopc.Record) error {
		if rec.Tx == tx {
			fn(seq, rec)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica %d: %w", r.cfg.ID, err)
	}
	return nil
}

// RaftLog returns the wal of the raft log (nil in memory), for its stats.
func (r *Replica) RaftLog() *wal.Log { return r.st.wal }

// Done is closed when Run has returned.
func (r *Replica) Done() <-chan struct{} { return r.done }

// Coordinator returns the coordinator this replica runs as the leader,
// waiting (until ctx ends) for it to be restored; a NotLeaderError if the
// replica does not lead.
func (r *Replica) Coordinator(ctx context.Context) (*coordinator.Coordinator, error) {
	r.mu.Lock()
	run, lead := r.mu.run, r.mu.status.Lead
	r.mu.Unlock()
	if run == nil {
		return nil, &NotLeaderError{ID: r.cfg.ID, Leader: lead}
	}
	select {
	case <-run.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-run.ctx.Done():
		return nil, &NotLeaderError{ID: r.cfg.ID}
	}
	if run.err != nil || run.ctx.Err() != nil {
		return nil, &NotLeaderError{ID: r.cfg.ID}
	}
	return run.coord, nil
}

// Submit runs a transaction on the leader's coordinator
// (coordinator.Submit); a NotLeaderError from a replica that does not lead.
// An error other than the outcome's says nothing about the transaction:
// submit it again, with the same id, to the leader.
func (r *Replica) Submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	c, err := r.Coordinator(ctx)
	if err != nil {
		return twopc.Outcome{}, err
	}
	o, err := c.Submit(ctx, tx, branches)
	if errors.Is(err, coordinator.ErrClosed) {
		err = &NotLeaderError{ID: r.cfg.ID, Leader: r.Status().Lead}
	}
	return o, err
}

// ReadIndex returns once this replica has confirmed, through a round of
// heartbeats with a majority, that it still leads, and has applied every
// entry committed before the call: what its coordinator knows then is not
// a deposed leader's stale view.
func (r *Replica) ReadIndex(ctx context.Context) error {
	q := &readReq{done: make(chan error, 1)}
	err := r.do(ctx, func() {
		if !r.leading || r.run == nil {
			q.done <- r.notLeader()
			return
		}
		r.readSer++
		r.reads[r.readSer] = q
		r.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, r.readSer))
	})
	if err != nil {
		return err
	}
	select {
	case err := <-q.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrStopped
	}
}

// Lookup answers an outcome query (coordinator.Lookup) as the leader,
// after ReadIndex confirmed the leadership.
func (r *Replica) Lookup(ctx context.Context, tx string) (coordinator.Known, twopc.Outcome, error) {
	c, err := r.Coordinator(ctx)
	if err != nil {
		return 0, twopc.Outcome{}, err
	}
	if err := r.ReadIndex(ctx); err != nil {
		return 0, twopc.Outcome{}, err
	}
	if c2, err := r.Coordinator(ctx); err != nil || c2 != c {
		return 0, twopc.Outcome{}, &NotLeaderError{ID: r.cfg.ID, Leader: r.Status().Lead}
	}
	k, o, err := c.Lookup(ctx, tx)
	if errors.Is(err, coordinator.ErrClosed) {
		err = &NotLeaderError{ID: r.cfg.ID, Leader: r.Status().Lead}
	}
	return k, o, err
}

// TransferLeadership asks the leader to hand its leadership to replica to.
func (r *Replica) TransferLeadership(ctx context.Context, to uint64) error {
	return r.do(ctx, func() { r.rn.TransferLeader(to) })
}

// Log is the coordinator's node.Log on the group, for one leadership: an
// append is one proposal (a Ready's records). As with a wal, AppendNoSync
// only appends (proposes) and Append also makes durable: it returns once
// its entry and every entry proposed before it are committed by a majority
// and applied. Once any proposal fails (the leadership is lost, or raft
// dropped it) every later append fails: the coordinator stops, nothing of
// a Ready whose records are not committed is sent or reported by a sync,
// and the next leader restores its machine from what the group committed.
//
// A Ready without forced records and without a decision is sent before
// its records are committed, as a single coordinator sends it before they
// are synced: its messages are PREPAREs (after BEGIN), resends and
// answers from state already committed. A decision, even the unforced
// ABORT a single coordinator sends before its record is synced, waits for
// the group: a deposed leader that has not noticed yet decides nothing
// that reaches a participant. (Participants also ignore an ABORT of an
// older epoch than the PREPARE that prepared their branch.)
//
// Unforced records are held back, not proposed at once: they go with the
// next forced append, in the same raft entry, or on their own once they
// have waited HoldTicks machine ticks (Tick) or fill maxHeld bytes. A
// single coordinator's unforced records cost a write and no fsync; here
// each proposal costs a replication round and an fsync on every replica,
// so a transaction whose BEGIN, ACKs and END were proposed alone paid
// for three or four rounds where one carries them all. Holding is safe
// for the same reason leaving them unsynced is: losing them with the
// leader loses a BEGIN (the next leader presumes abort) or the ACKs and
// END of a committed transaction (the next leader sends COMMIT again and
// the branches acknowledge it again).
type Log struct {
	r        *Replica
	run      *leaderRun
	last     uint64
	pending  []*proposal // proposed, result not yet taken, oldest first
	err      error
	yield    func() bool // a stepped replica's: see SetYield
	held     []byte      // records held back: an entry's data, tag first
	heldRecs int
	ticks    int // machine ticks since the first held record
	hold     int // ticks a record may be held
}

// maxHeld is how many bytes of unforced records a Log holds back before
// it proposes them.
const maxHeld = 64 << 10

func (r *Replica) newLog(run *leaderRun) *Log {
	return &Log{r: r, run: run, hold: r.cfg.HoldTicks}
}

// SetYield sets how an append of a stepped replica's Log waits for the
// group: by calling yield, which returns once the driver has run the
// group on (true), or false if the driver gives up (the append then
// fails with ErrStopped). The simulator runs each carry as a coroutine
// (iter.Pull) and yield hands control back to its event loop.
func (l *Log) SetYield(yield func() bool) { l.yield = yield }

// Append proposes entries (if any) and waits until they and everything
// proposed before are committed and applied.
func (l *Log) Append(entries ...wal.Entry) (uint64, error) {
	if len(entries) > 0 || l.heldRecs > 0 {
		if l.err != nil {
			return 0, l.err
		}
		l.holdBack(entries)
		if err := l.flush(); err != nil {
			return 0, err
		}
	}
	if l.r.cfg.Coordinator.Machine.Mutants.Has(mutant.ReplicaNoWait) && l.err == nil {
		return l.last, nil // the planted bug: no wait for the group
	}
	for len(l.pending) > 0 {
		if err := l.take(l.wait(l.pending[0])); err != nil {
			return 0, err
		}
	}
	return l.last, l.err
}

// AppendNoSync holds entries back (see Log) and returns without waiting
// for them, unless they hold a decision (an unforced ABORT): then it is
// Append, so that no decision leaves a leader before the group has
// committed it.
func (l *Log) AppendNoSync(entries ...wal.Entry) (uint64, error) {
	for _, e := range entries {
		if t := twopc.RecType(e.Type); t == twopc.RecAbort || t == twopc.RecCommit || t == twopc.RecRestart {
			return l.Append(entries...)
		}
	}
	if len(entries) > 0 {
		if l.err != nil {
			return 0, l.err
		}
		l.holdBack(entries)
		if len(l.held) >= maxHeld {
			if err := l.flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := l.takeDone(); err != nil {
		return 0, err
	}
	return l.last, l.err
}

// Tick counts one machine tick (the node loop calls it with the
// machine's): records held back that long are proposed.
func (l *Log) Tick() error {
	if l.heldRecs == 0 {
		return l.takeDone()
	}
	l.ticks++
	if l.ticks < l.hold {
		return nil
	}
	if err := l.flush(); err != nil {
		return err
	}
	return l.takeDone()
}

// Held is the number of records held back, not proposed yet.
func (l *Log) Held() int { return l.heldRecs }

// holdBack adds entries to the records held back.
func (l *Log) holdBack(es []wal.Entry) {
	if l.heldRecs == 0 {
		l.held = encodeEntry(l.held[:0], es)
		l.ticks = 0
	} else {
		l.held = appendRecords(l.held, es)
	}
	l.heldRecs += len(es)
}

// flush proposes the records held back, as one raft entry.
func (l *Log) flush() error {
	if l.heldRecs == 0 {
		return l.err
	}
	data, n := l.held, l.heldRecs
	l.held, l.heldRecs, l.ticks = nil, 0, 0
	return l.propose(data, n)
}

// takeDone takes the results already in, without waiting: the list stays
// short, and a failure is seen at once.
func (l *Log) takeDone() error {
	for len(l.pending) > 0 {
		select {
		case res := <-l.pending[0].done:
			if err := l.take(res); err != nil {
				return err
			}
			continue
		case <-l.run.ctx.Done():
			l.err = &NotLeaderError{ID: l.r.cfg.ID}
			return l.err
		default:
		}
		break
	}
	return l.err
}

// DurableSeq is the seq of the last record known committed.
func (l *Log) DurableSeq() uint64 { return l.last }

// Compact does nothing: every replica compacts its raft log itself.
func (l *Log) Compact(uint64) error { return nil }

// propose proposes data (an entry's, tag first) holding n records.
func (l *Log) propose(data []byte, n int) error {
	if l.err != nil {
		return l.err
	}
	p := &proposal{run: l.run, data: data, done: make(chan propResult, 1), records: n}
	if l.r.cfg.Lead != nil {
		// A stepped replica: this runs on its driver's goroutine (or a
		// coroutine of it), between two Turns.
		l.r.propose(p)
		l.pending = append(l.pending, p)
		return nil
	}
	select {
	case l.r.prop <- p:
	case <-l.run.ctx.Done():
		l.err = &NotLeaderError{ID: l.r.cfg.ID}
		return l.err
	case <-l.r.done:
		l.err = ErrStopped
		return l.err
	}
	l.pending = append(l.pending, p)
	return nil
}

// wait returns p's result once raft has it: blocking on a running
// replica, yielding to the driver on a stepped one.
func (l *Log) wait(p *proposal) propResult {
	if l.r.cfg.Lead == nil {
		select {
		case res := <-p.done:
			return res
		case <-l.run.ctx.Done():
			return propResult{err: &NotLeaderError{ID: l.r.cfg.ID}}
		case <-l.r.done:
			return propResult{err: ErrStopped}
		}
	}
	for {
		select {
		case res := <-p.done:
			return res
		default:
		}
		if l.run.ctx.Err() != nil {
			return propResult{err: &NotLeaderError{ID: l.r.cfg.ID}}
		}
		if l.yield == nil || !l.yield() {
			return propResult{err: ErrStopped}
		}
	}
}

// take records the result of the oldest pending proposal.
func (l *Log) take(res propResult) error {
	p := l.pending[0]
	l.pending[0] = nil
	l.pending = l.pending[1:]
	if res.err != nil {
		l.err = res.err
		return res.err
	}
	l.last = res.index<<seqShift | uint64(p.records-1)
	return nil
}

// ReplayCommitted opens the raft log in cfg (of a group of peers), loads
// its newest valid snapshot file and replays every committed record after
// it into the machine (restored, not started): the state any leader
// elected with this log would restore. It returns the machine and the
// commit index. The simulator's replay check uses it.
func ReplayCommitted(cfg wal.Config, peers []uint64, mc twopc.CoordinatorConfig) (*twopc.Coordinator, uint64, error) {
	st, err := openStorage(cfg, peers)
	if err != nil {
		return nil, 0, err
	}
	defer st.close()
	m, at, _, _, err := loadState(cfg, st, mc)
	if err != nil {
		return nil, 0, err
	}
	commit := max(st.hs.GetCommit(), at)
	if commit > at {
		ents, err := st.Entries(at+1, commit+1, math.MaxUint64)
		if err != nil {
			return nil, 0, fmt.Errorf("replica: read raft log: %w", err)
		}
		if err := eachEntryRecord(ents, func(_ uint64, rec twopc.Record) error { return m.Restore(rec) }); err != nil {
			return nil, 0, err
		}
	}
	return m, commit, nil
}
