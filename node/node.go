// Package node is the driver of the twopc state machines. Carrier is the
// one implementation of the ordering rule: a Ready's records are appended
// to the log (and synced when the Ready says so) before any message leaves
// or any outcome is reported. Recover is the one way a machine comes back
// from its log. Node runs one machine: it is the only place with a select
// loop, which feeds the machine messages, calls and ticks and has a Carrier
// carry out each Ready. The simulator drives the machines on its own clock
// but with the same Carrier and Recover, cutting them through Hooks.
//
// While the log syncs, new messages pile up in the inbox; the next turn of
// the loop takes them all, so one fsync covers every transaction that
// arrived meanwhile (group commit at the machine level).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Machine is what both twopc machines offer their driver.
type Machine interface {
	Step(twopc.Message)
	Tick()
	HasReady() bool
	Ready() twopc.Ready
	Advance()
}

// ErrCrashed is returned by Run and Carry when a crash hook stopped the
// node.
var ErrCrashed = errors.New("node: crashed (simulated)")

// Hooks let a deployment inject faults at the node's crash points: the
// failpoints of the kill tests, a participant's simulated crashes, the
// simulator's crash points and disk faults. Every hook runs on the loop
// goroutine; nil hooks do nothing. Mutants is zero outside tests.
type Hooks struct {
	// CrashBeforeLog is asked before a Ready's records are written; sync
	// says whether they will be synced. True crashes the node with nothing
	// of that Ready written. A simulated disk may arm its faults here (a
	// failed write or fsync, a halt between the write and the fsync), which
	// the append then meets.
	CrashBeforeLog func(rd *twopc.Ready, sync bool) bool
	// CrashAfterLog is asked after a Ready's records are appended (and
	// durable, if the Ready syncs) and before any of its messages leave
	// (e.g. after PREPARED, before the YES).
	CrashAfterLog func(rd *twopc.Ready) bool
	// CrashAfterSend is asked after a Ready's messages were handed to the
	// transport and before its outcomes are reported: a transport that
	// crashed part way through sending them says so here (true).
	CrashAfterSend func(rd *twopc.Ready) bool
	// Delay returns how long to hold an outgoing message (0: send now).
	Delay func(m *twopc.Message) time.Duration
	// CrashCompact is asked before the carrier compacts the log (removes
	// the segments wholly before seq upTo, once a later checkpoint is
	// durable). True crashes the node before it; a simulated disk may
	// also arm a halt that the compaction then meets.
	CrashCompact func(upTo uint64) bool
	// Mutants plants bugs in the carry and replay paths, for the tests
	// that show they are caught (package mutant). Zero in production.
	Mutants mutant.Set
}

// Log is where a Carrier writes a Ready's records: a *wal.Log (one
// process's write-ahead log) or a replicated log (package replica), where
// "durable" means committed by a majority of the coordinator replicas.
// Append makes the entries, and everything appended before them, durable
// before it returns; AppendNoSync only appends. Both return the seq of the
// last entry. An error is final: the machine must be rebuilt from the log
// (a failed fsync, or a replica that lost its leadership).
type Log interface {
	Append(entries ...wal.Entry) (uint64, error)
	AppendNoSync(entries ...wal.Entry) (uint64, error)
	// DurableSeq is the seq up to which everything is durable.
	DurableSeq() uint64
	// Compact drops the records before seq upTo (whole segments of a
	// wal; nothing for a replicated log, which compacts itself).
	Compact(upTo uint64) error
}

var _ Log = (*wal.Log)(nil)

// Ticker is a Log that holds unforced records back for a while (a
// replicated coordinator's log carries them with its next forced append):
// the loop calls Tick at every machine tick, so that what it holds leaves
// within a bounded time even when no forced append comes.
type Ticker interface {
	Tick() error
}

// Config configures a Node.
type Config struct {
	// ID is the node's name on the network.
	ID string
	// Log receives the machine's records. The node does not close it.
	Log Log
	// Transport sends the machine's messages.
	Transport transport.Transport
	// Tick is the wall-clock length of one machine tick.
	Tick time.Duration
	// InboxSize bounds the inbox (in batches).
	InboxSize int
	// OnOutcomes receives outcomes, on the loop goroutine, after they are
	// durable. It must not block.
	OnOutcomes func([]twopc.Outcome)
	// OnRecord, if set, sees every record after it was appended (metrics,
	// tracing). It must not block.
	OnRecord func(*twopc.Record)
	Hooks    Hooks
	Logger   *slog.Logger
	// Checkpoints are the checkpoint seqs RecoverCheckpoints found in Log
	// (see Carrier.Checkpoints).
	Checkpoints []uint64
	// NoCheckpointCompaction: see Carrier.NoCheckpointCompaction.
	NoCheckpointCompaction bool
}

// Node drives one machine.
type Node struct {
	cfg     Config
	m       Machine
	inbox   chan []twopc.Message
	calls   chan func()
	carrier Carrier
}

// New returns a node for m. Nothing runs until Run.
func New(cfg Config, m Machine) (*Node, error) {
	if cfg.ID == "" || cfg.Log == nil || cfg.Transport == nil || cfg.Tick <= 0 {
		return nil, fmt.Errorf("node: ID, Log, Transport and a positive Tick are required")
	}
	if cfg.InboxSize <= 0 {
		cfg.InboxSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Node{
		cfg:   cfg,
		m:     m,
		inbox: make(chan []twopc.Message, cfg.InboxSize),
		calls: make(chan func(), 1024),
		carrier: Carrier{
			ID:                     cfg.ID,
			Log:                    cfg.Log,
			Transport:              cfg.Transport,
			OnOutcomes:             cfg.OnOutcomes,
			OnRecord:               cfg.OnRecord,
			Hooks:                  cfg.Hooks,
			Checkpoints:            cfg.Checkpoints,
			NoCheckpointCompaction: cfg.NoCheckpointCompaction,
		},
	}, nil
}

// Inbox is where the network delivers this node's messages.
func (n *Node) Inbox() chan []twopc.Message { return n.inbox }

// Do runs f on the loop goroutine, with the machine to itself, and returns
// once f has run. It fails if ctx ends or the node stops first (done closed).
func (n *Node) Do(ctx context.Context, done <-chan struct{}, f func()) error {
	ran := make(chan struct{})
	select {
	case n.calls <- func() { f(); close(ran) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrStopped
	}
	select {
	case <-ran:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrStopped
	}
}

// Post queues f to run on the loop goroutine and returns without waiting
// for it. It fails if ctx ends or the node stops (done closed) before f is
// queued; a node that stops after that never runs f.
func (n *Node) Post(ctx context.Context, done <-chan struct{}, f func()) error {
	select {
	case n.calls <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrStopped
	}
}

// ErrStopped is returned by Do when the node is not running.
var ErrStopped = errors.New("node: stopped")

// Run carries out the machine's work until ctx ends (nil error), the log
// fails (the error: never retry an fsync, restart from the log instead) or
// a crash hook fires (ErrCrashed).
func (n *Node) Run(ctx context.Context) error {
	ticker := time.NewTicker(n.cfg.Tick)
	defer ticker.Stop()
	// The machine's clock follows the wall clock: a ticker drops the ticks
	// that come while the loop is busy (a sync takes milliseconds), so each
	// one that arrives stands for every tick since the last, up to a
	// second's worth (a loop stalled longer than that does not replay the
	// gap). Otherwise timeouts and retention windows, counted in ticks,
	// would stretch with the load.
	last := time.Now()
	maxCatchUp := max(1, int(time.Second/n.cfg.Tick))
	logTicker, _ := n.cfg.Log.(Ticker)
	for {
		if err := n.flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case batch := <-n.inbox:
			n.step(batch)
		case f := <-n.calls:
			f()
		case now := <-ticker.C:
			k := int(now.Sub(last) / n.cfg.Tick)
			switch {
			case k < 1:
				k = 1
				last = now
			case k > maxCatchUp:
				k = maxCatchUp
				last = now
			default:
				last = last.Add(time.Duration(k) * n.cfg.Tick)
			}
			for range k {
				n.m.Tick()
				if logTicker != nil {
					if err := logTicker.Tick(); err != nil {
						return fmt.Errorf("node %s: log: %w", n.cfg.ID, err)
					}
				}
			}
		}
		// Take whatever else is already waiting, so one sync covers it all.
	drain:
		for i := 0; i < 256; i++ {
			select {
			case batch := <-n.inbox:
				n.step(batch)
			case f := <-n.calls:
				f()
			default:
				break drain
			}
		}
	}
}

func (n *Node) step(batch []twopc.Message) {
	for i := range batch {
		n.m.Step(batch[i])
	}
}

// flush carries out one Ready, if there is one.
func (n *Node) flush() error { return n.carrier.Carry(n.m) }

// Carrier carries out a machine's Readies under the ordering rule: it is the
// one implementation of it, used by Node's loop and by the simulator, which
// drives machines on its own clock and cuts the sequence through Hooks.
//
// For each Ready: the records are appended to Log, synced when
// Ready.MustSync() says so (a sync also makes durable everything appended
// unsynced before), and only then are the messages handed to Transport and
// the outcomes to OnOutcomes. A Carrier is not safe for concurrent use.
type Carrier struct {
	// ID names the node in errors.
	ID string
	// Log receives the records. The carrier does not close it.
	Log Log
	// Transport sends the messages.
	Transport transport.Transport
	// OnOutcomes receives outcomes after they are durable. It must not
	// block.
	OnOutcomes func([]twopc.Outcome)
	// OnRecord, if set, sees every record after it was appended (metrics,
	// tracing, checkers). It must not block.
	OnRecord func(*twopc.Record)
	Hooks    Hooks

	// Checkpoints holds the seqs of the latest checkpoint records (a
	// coordinator's RecCheckpoint heads) of Log, oldest first: Recover
	// finds them in the log, Carry adds those it appends. Once a third is
	// durable, the log before the oldest of the three is compacted
	// (unless NoCheckpointCompaction).
	Checkpoints []uint64
	// NoCheckpointCompaction leaves the log's compaction to its owner (and
	// Checkpoints unused): a coordinator that takes snapshots (package
	// coordinator) compacts it after each one, and a compaction at
	// checkpoints could cut the log past the snapshot a restart falls back
	// to.
	NoCheckpointCompaction bool

	buf     []byte
	entries []wal.Entry
}

// keepCheckpoints is how many checkpoints the log keeps: replay from the
// oldest rebuilds every generation of outcomes and every expired set
// (twopc/retain.go).
const keepCheckpoints = twopc.CheckpointsKept

// noteCheckpoints records the seqs of rd's checkpoint heads, appended with
// lastSeq as the seq of the last record.
func (c *Carrier) noteCheckpoints(rd *twopc.Ready, lastSeq uint64) {
	for i := range rd.Records {
		if r := &rd.Records[i]; r.Type == twopc.RecCheckpoint && r.Attempt == 0 {
			c.Checkpoints = append(c.Checkpoints, lastSeq-uint64(len(rd.Records)-1-i))
		}
	}
}

// compact removes the log segments before the oldest kept checkpoint once
// the newest is durable.
func (c *Carrier) compact() error {
	n := len(c.Checkpoints)
	if n < keepCheckpoints || c.Log.DurableSeq() < c.Checkpoints[n-1] {
		return nil
	}
	c.Checkpoints = c.Checkpoints[n-keepCheckpoints:]
	if c.Hooks.CrashCompact != nil && c.Hooks.CrashCompact(c.Checkpoints[0]) {
		return ErrCrashed
	}
	return c.Log.Compact(c.Checkpoints[0])
}

// Carry carries out m's Ready, if it has one, and advances m past it. It
// returns ErrCrashed if a crash hook stopped it (m is then not advanced:
// the node is dead and must be rebuilt with Recover), or the log's error
// (never retry an fsync: recover from the log instead).
func (c *Carrier) Carry(m Machine) error {
	if !m.HasReady() {
		return nil
	}
	rd := m.Ready()
	h := &c.Hooks
	sync := rd.MustSync()
	msgs := rd.Messages
	reported := false
	if h.Mutants != 0 {
		sync = mutantSync(h.Mutants, &rd, sync)
		var early []twopc.Message
		early, msgs, reported = mutantEarly(h.Mutants, &rd)
		c.send(early)
		if reported {
			c.report(rd.Outcomes)
		}
	}
	if h.CrashBeforeLog != nil && h.CrashBeforeLog(&rd, sync) {
		return ErrCrashed
	}
	c.buf = c.buf[:0]
	c.entries = c.entries[:0]
	for i := range rd.Records {
		start := len(c.buf)
		c.buf = twopc.AppendRecord(c.buf, &rd.Records[i])
		c.entries = append(c.entries, wal.Entry{Type: uint8(rd.Records[i].Type), Data: c.buf[start:len(c.buf):len(c.buf)]})
	}
	// A forced Append makes everything appended so far durable, even with
	// no entry of its own: an outcome is a promise, so what was appended
	// before it, unforced, is synced first.
	var err error
	var last uint64
	if sync {
		last, err = c.Log.Append(c.entries...)
	} else if len(c.entries) > 0 {
		last, err = c.Log.AppendNoSync(c.entries...)
	}
	if err != nil {
		return fmt.Errorf("node %s: log: %w", c.ID, err)
	}
	if len(c.entries) > 0 && !c.NoCheckpointCompaction {
		c.noteCheckpoints(&rd, last)
	}
	if len(c.Checkpoints) >= keepCheckpoints {
		if err := c.compact(); err != nil {
			if err == ErrCrashed {
				return err
			}
			return fmt.Errorf("node %s: compact log: %w", c.ID, err)
		}
	}
	if c.OnRecord != nil {
		for i := range rd.Records {
			c.OnRecord(&rd.Records[i])
		}
	}
	if h.CrashAfterLog != nil && h.CrashAfterLog(&rd) {
		return ErrCrashed
	}
	c.send(msgs)
	if h.CrashAfterSend != nil && h.CrashAfterSend(&rd) {
		return ErrCrashed
	}
	if !reported {
		c.report(rd.Outcomes)
	}
	m.Advance()
	return nil
}

func (c *Carrier) report(outs []twopc.Outcome) {
	if len(outs) > 0 && c.OnOutcomes != nil {
		c.OnOutcomes(outs)
	}
}

func (c *Carrier) send(msgs []twopc.Message) {
	if len(msgs) == 0 {
		return
	}
	if c.Hooks.Delay == nil {
		c.Transport.Send(msgs)
		return
	}
	now := msgs[:0:0]
	for i := range msgs {
		if d := c.Hooks.Delay(&msgs[i]); d > 0 {
			m := []twopc.Message{msgs[i]}
			time.AfterFunc(d, func() { c.Transport.Send(m) })
			continue
		}
		now = append(now, msgs[i])
	}
	c.Transport.Send(now)
}

// MergeHooks combines two hook sets: a crash point fires if either fires
// (a is asked first); a's Delay wins when both have one; the mutants of
// both are planted.
func MergeHooks(a, b Hooks) Hooks {
	or := func(x, y func(*twopc.Ready) bool) func(*twopc.Ready) bool {
		switch {
		case x == nil:
			return y
		case y == nil:
			return x
		}
		return func(rd *twopc.Ready) bool { return x(rd) || y(rd) }
	}
	out := Hooks{
		CrashBeforeLog: a.CrashBeforeLog,
		CrashAfterLog:  or(a.CrashAfterLog, b.CrashAfterLog),
		CrashAfterSend: or(a.CrashAfterSend, b.CrashAfterSend),
		Delay:          a.Delay,
		Mutants:        a.Mutants | b.Mutants,
		CrashCompact:   a.CrashCompact,
	}
	if out.CrashCompact == nil {
		out.CrashCompact = b.CrashCompact
	} else if y := b.CrashCompact; y != nil {
		x := out.CrashCompact
		out.CrashCompact = func(upTo uint64) bool { return x(upTo) || y(upTo) }
	}
	if x, y := a.CrashBeforeLog, b.CrashBeforeLog; x == nil {
		out.CrashBeforeLog = y
	} else if y != nil {
		out.CrashBeforeLog = func(rd *twopc.Ready, sync bool) bool { return x(rd, sync) || y(rd, sync) }
	}
	if out.Delay == nil {
		out.Delay = b.Delay
	}
	return out
}

// ErrBusy is returned by DoQuiet when the machine has work not yet
// carried out; try again.
var ErrBusy = errors.New("node: machine has a Ready not yet carried out")

// DoQuiet is Do for f that needs the machine between two Readies, its
// state exactly what its log holds (a snapshot): if the machine has a
// Ready not carried out yet, f does not run and DoQuiet returns ErrBusy.
func (n *Node) DoQuiet(ctx context.Context, done <-chan struct{}, f func()) error {
	var busy bool
	err := n.Do(ctx, done, func() {
		if busy = n.m.HasReady(); !busy {
			f()
		}
	})
	if err == nil && busy {
		err = ErrBusy
	}
	return err
}

// Restorer is a machine that can be rebuilt from its log: both twopc
// machines.
type Restorer interface {
	// Restore applies one logged record (before Start).
	Restore(twopc.Record) error
	// Start begins serving after the last record: the coordinator logs a
	// new epoch and queues its unfinished work; a participant asks about
	// its branches in doubt.
	Start()
}

// Recover is the one way a machine comes back from its log: it opens the
// log of cfg (cutting a torn tail), replays every record into m and starts
// m. The work Start queued is m's first Ready, for the caller to carry out.
// On error the log is closed (if it was opened).
func Recover(cfg wal.Config, m Restorer, h Hooks) (*wal.Log, error) {
	log, _, err := RecoverCheckpoints(cfg, m, h)
	return log, err
}

// RecoverAfter is Recover for a machine already loaded from a snapshot
// that covers the log up to seq after: only the records after it are
// replayed. The log must still hold them all (compaction keeps the
// segments after the oldest snapshot kept); a log compacted past after+1
// is an error, never a silently shorter history. The log is opened and
// replayed in one pass (wal.OpenFrom): the segments the snapshot covers
// are not read. On error m may have restored records before the error was
// found; the caller discards it.
func RecoverAfter(cfg wal.Config, m Restorer, h Hooks, after uint64) (*wal.Log, error) {
	if h.Mutants != 0 {
		return recoverAfterMutant(cfg, m, h, after)
	}
	var restoreErr error
	log, err := wal.OpenFrom(cfg, after+1, func(r wal.Record) error {
		// DecodeRecord's result shares nothing with r.Data: no copy needed.
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil {
			restoreErr = fmt.Errorf("log record %d: %w", r.Seq, err)
		} else {
			restoreErr = m.Restore(rec)
		}
		return restoreErr
	})
	if me := (*wal.MissingError)(nil); errors.As(err, &me) {
		return nil, missingError(me.First, after)
	}
	if err != nil {
		if restoreErr != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		return nil, fmt.Errorf("open log: %w", err)
	}
	if last := log.LastSeq(); last < after {
		log.Close()
		return nil, fmt.Errorf("replay: the log ends at record %d, before the snapshot's record %d", last, after)
	}
	m.Start()
	return log, nil
}

// missingError is RecoverAfter's error for a log that starts at record
// first, after the snapshot's record after + 1.
func missingError(first, after uint64) error {
	if after == 0 {
		return fmt.Errorf("replay: the log starts at record %d and there is no valid snapshot of what came before", first)
	}
	return fmt.Errorf("replay: the log starts at record %d, after the snapshot's record %d: records in between are missing", first, after)
}

// recoverAfterMutant is RecoverAfter with the replay bugs of h.Mutants
// planted: the log is opened, then replayed.
func recoverAfterMutant(cfg wal.Config, m Restorer, h Hooks, after uint64) (*wal.Log, error) {
	log, err := wal.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if first := log.FirstSeq(); first > after+1 {
		log.Close()
		return nil, missingError(first, after)
	}
	if last := log.LastSeq(); last < after {
		log.Close()
		return nil, fmt.Errorf("replay: the log ends at record %d, before the snapshot's record %d", last, after)
	}
	restore := func(r twopc.Record, seq uint64) error {
		if seq <= after {
			return nil
		}
		return m.Restore(r)
	}
	if err := replayFrom(log, after+1, restore, h); err != nil {
		log.Close()
		return nil, fmt.Errorf("replay: %w", err)
	}
	m.Start()
	return log, nil
}

// RecoverCheckpoints is Recover that also returns the seqs of the
// checkpoint heads it replayed (the latest few, oldest first), for
// Carrier.Checkpoints.
func RecoverCheckpoints(cfg wal.Config, m Restorer, h Hooks) (*wal.Log, []uint64, error) {
	log, err := wal.Open(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	var ckpts []uint64
	restore := func(r twopc.Record, seq uint64) error {
		if r.Type == twopc.RecCheckpoint && r.Attempt == 0 {
			if len(ckpts) == keepCheckpoints {
				ckpts = append(ckpts[:0], ckpts[1:]...)
			}
			ckpts = append(ckpts, seq)
		}
		return m.Restore(r)
	}
	if err := replaySeq(log, restore, h); err != nil {
		log.Close()
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	m.Start()
	return log, ckpts, nil
}

// Replay decodes every record of log, in order, and hands it to restore
// (a machine's Restore): the inverse of what Carry writes. Recover uses
// it; so do checkers that rebuild a machine's state from a log without
// starting it.
func Replay(log *wal.Log, restore func(twopc.Record) error, h Hooks) error {
	return replaySeq(log, func(r twopc.Record, _ uint64) error { return restore(r) }, h)
}

// ReplayAfter is Replay of the records after seq after only (those of a
// snapshot's tail).
func ReplayAfter(log *wal.Log, restore func(twopc.Record) error, h Hooks, after uint64) error {
	return replayFrom(log, after+1, func(r twopc.Record, seq uint64) error {
		if seq <= after {
			return nil
		}
		return restore(r)
	}, h)
}

func replaySeq(log *wal.Log, restore func(twopc.Record, uint64) error, h Hooks) error {
	return replayFrom(log, 0, restore, h)
}

// replayFrom is replaySeq of the records from seq from on: those before
// are not decoded (the wal still checks them).
func replayFrom(log *wal.Log, from uint64, restore func(twopc.Record, uint64) error, h Hooks) error {
	if h.Mutants != 0 {
		return mutantReplay(log, restore, h.Mutants)
	}
	// DecodeRecord's result shares nothing with r.Data: no copy needed.
	return log.ReplayFromNoCopy(from, func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil {
			return fmt.Errorf("log record %d: %w", r.Seq, err)
		}
		return restore(rec, r.Seq)
	})
}
