// Package node runs one twopc state machine: it is the only place with a
// select loop. The loop feeds the machine messages, calls and ticks, and
// carries out each Ready under the twopc ordering rule: records are appended
// to the log (and synced when the Ready says so) before any message leaves
// or any outcome is reported.
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

// ErrCrashed is returned by Run when a crash hook stopped the node.
var ErrCrashed = errors.New("node: crashed (simulated)")

// Hooks let a deployment inject faults at the node's crash points. Every
// hook runs on the loop goroutine; nil hooks do nothing.
type Hooks struct {
	// CrashBeforeLog is asked before a Ready's records are written; true
	// crashes the node with nothing of that Ready durable.
	CrashBeforeLog func(rd *twopc.Ready) bool
	// CrashAfterLog is asked after a Ready's records are durable and before
	// any of its messages leave (e.g. after PREPARED, before the YES).
	CrashAfterLog func(rd *twopc.Ready) bool
	// Delay returns how long to hold an outgoing message (0: send now).
	Delay func(m *twopc.Message) time.Duration
}

// Config configures a Node.
type Config struct {
	// ID is the node's name on the network.
	ID string
	// Log receives the machine's records. The node does not close it.
	Log *wal.Log
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
}

// Node drives one machine.
type Node struct {
	cfg     Config
	m       Machine
	inbox   chan []twopc.Message
	calls   chan func()
	buf     []byte
	entries []wal.Entry
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
		case <-ticker.C:
			n.m.Tick()
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
func (n *Node) flush() error {
	if !n.m.HasReady() {
		return nil
	}
	rd := n.m.Ready()
	h := n.cfg.Hooks
	if h.CrashBeforeLog != nil && h.CrashBeforeLog(&rd) {
		return ErrCrashed
	}
	n.buf = n.buf[:0]
	n.entries = n.entries[:0]
	for i := range rd.Records {
		start := len(n.buf)
		n.buf = twopc.AppendRecord(n.buf, &rd.Records[i])
		n.entries = append(n.entries, wal.Entry{Type: uint8(rd.Records[i].Type), Data: n.buf[start:len(n.buf):len(n.buf)]})
	}
	// A forced Append makes everything appended so far durable, even with
	// no entry of its own: an outcome is a promise, so what was appended
	// before it, unforced, is synced first.
	var err error
	if rd.MustSync() {
		_, err = n.cfg.Log.Append(n.entries...)
	} else if len(n.entries) > 0 {
		_, err = n.cfg.Log.AppendNoSync(n.entries...)
	}
	if err != nil {
		return fmt.Errorf("node %s: log: %w", n.cfg.ID, err)
	}
	if n.cfg.OnRecord != nil {
		for i := range rd.Records {
			n.cfg.OnRecord(&rd.Records[i])
		}
	}
	if h.CrashAfterLog != nil && h.CrashAfterLog(&rd) {
		return ErrCrashed
	}
	n.send(rd.Messages)
	if len(rd.Outcomes) > 0 && n.cfg.OnOutcomes != nil {
		n.cfg.OnOutcomes(rd.Outcomes)
	}
	n.m.Advance()
	return nil
}

func (n *Node) send(msgs []twopc.Message) {
	if n.cfg.Hooks.Delay == nil {
		n.cfg.Transport.Send(msgs)
		return
	}
	now := msgs[:0:0]
	for i := range msgs {
		if d := n.cfg.Hooks.Delay(&msgs[i]); d > 0 {
			m := []twopc.Message{msgs[i]}
			time.AfterFunc(d, func() { n.cfg.Transport.Send(m) })
			continue
		}
		now = append(now, msgs[i])
	}
	n.cfg.Transport.Send(now)
}

// MergeHooks combines two hook sets: a crash point fires if either fires
// (a is asked first); a's Delay wins when both have one.
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
		CrashBeforeLog: or(a.CrashBeforeLog, b.CrashBeforeLog),
		CrashAfterLog:  or(a.CrashAfterLog, b.CrashAfterLog),
		Delay:          a.Delay,
	}
	if out.Delay == nil {
		out.Delay = b.Delay
	}
	return out
}

// Replay decodes every record of log, in order, and hands it to restore
// (a machine's Restore): the inverse of what flush writes.
func Replay(log *wal.Log, restore func(twopc.Record) error) error {
	return log.Replay(func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil {
			return fmt.Errorf("log record %d: %w", r.Seq, err)
		}
		return restore(rec)
	})
}
