// Package coordinator is the driver of the twopc coordinator machine: it
// recovers the machine from its log, runs it on a node loop, and offers
// clients Submit, which returns only once the outcome is durable.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Config configures a Coordinator.
type Config struct {
	// Dir holds the coordinator's log.
	Dir string
	// Machine is the protocol configuration (timeouts in ticks).
	Machine twopc.CoordinatorConfig
	// Tick is the wall-clock length of one tick.
	Tick time.Duration
	// Network connects the coordinator to the participants.
	Network transport.Network
	// Log configures the write-ahead log (Dir is set from Dir above).
	Log wal.Config
	// OnRecovered receives outcomes decided during recovery (no client
	// waits for them). Optional; called on the loop goroutine.
	OnRecovered func(twopc.Outcome)
	// OnRecord, if set, sees every record after it was appended (metrics).
	// Called on the loop goroutine; it must not block.
	OnRecord func(*twopc.Record)
	// Hooks are crash points for tests (failpoints).
	Hooks  node.Hooks
	Logger *slog.Logger
}

// Coordinator runs the coordinator machine.
type Coordinator struct {
	cfg  Config
	log  *wal.Log
	m    *twopc.Coordinator
	node *node.Node

	done    chan struct{}                   // closed when Run returns
	waiters map[string]waitList             // loop goroutine only
	lookups map[string][]chan twopc.Outcome // loop goroutine only; see Lookup

	stop context.Context // cancelled by Close
	halt context.CancelFunc

	mu struct {
		sync.Mutex
		running, closed bool
	}
}

// Open opens (or creates) the coordinator's log, replays it into a fresh
// machine and starts it: the new epoch is logged and unfinished work is
// queued (presumed abort of undecided transactions, COMMIT resends). Call
// Run to serve.
func Open(cfg Config) (*Coordinator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lc := cfg.Log
	lc.Dir = filepath.Clean(cfg.Dir)
	log, err := wal.Open(lc)
	if err != nil {
		return nil, fmt.Errorf("coordinator: open log: %w", err)
	}
	m, err := twopc.NewCoordinator(cfg.Machine)
	if err != nil {
		log.Close()
		return nil, err
	}
	err = node.Replay(log, m.Restore)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("coordinator: replay: %w", err)
	}
	m.Start()
	c := &Coordinator{
		cfg:     cfg,
		log:     log,
		m:       m,
		done:    make(chan struct{}),
		waiters: make(map[string]waitList),
		lookups: make(map[string][]chan twopc.Outcome),
	}
	c.stop, c.halt = context.WithCancel(context.Background())
	c.node, err = node.New(node.Config{
		ID:         cfg.Machine.ID,
		Log:        log,
		Transport:  cfg.Network,
		Tick:       cfg.Tick,
		OnOutcomes: c.deliver,
		OnRecord:   cfg.OnRecord,
		Hooks:      cfg.Hooks,
		Logger:     cfg.Logger,
	}, m)
	if err != nil {
		log.Close()
		return nil, err
	}
	return c, nil
}

// Run serves until ctx ends or the log fails. It registers the coordinator
// on the network for as long as it runs.
func (c *Coordinator) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.mu.running || c.mu.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.mu.running = true
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stop, cancel)()
	inbox := c.node.Inbox()
	c.cfg.Network.Register(c.cfg.Machine.ID, inbox)
	err := c.node.Run(ctx)
	c.cfg.Network.Unregister(c.cfg.Machine.ID, inbox)
	close(c.done)
	if err != nil {
		c.cfg.Logger.Error("coordinator stopped", "err", err)
	}
	return err
}

// deliver hands each outcome to the oldest waiter for its transaction.
func (c *Coordinator) deliver(outs []twopc.Outcome) {
	for _, o := range outs {
		c.answerLookups(o)
		w, ok := c.waiters[o.Tx]
		if !ok {
			if o.Recovered && c.cfg.OnRecovered != nil {
				c.cfg.OnRecovered(o)
			}
			continue
		}
		w.first <- result{o: o}
		if len(w.more) == 0 {
			delete(c.waiters, o.Tx)
		} else {
			c.waiters[o.Tx] = waitList{first: w.more[0], more: w.more[1:]}
		}
	}
}

// result is what a Submit waits for.
type result struct {
	o   twopc.Outcome
	err error
}

// waitList holds the Submits waiting for one transaction's outcome, in
// order (more than one only for duplicate submissions).
type waitList struct {
	first chan result
	more  []chan result
}

// ErrClosed is returned by Submit when the coordinator is not running.
var ErrClosed = errors.New("coordinator: closed")

// Submit runs a transaction and returns its outcome once it is durable.
// A transaction id submitted before gets the first outcome, as Duplicate.
// If ctx ends first, the caller has learned nothing: the transaction may
// still commit; ask again with the same id.
func (c *Coordinator) Submit(ctx context.Context, tx string, branches []twopc.Branch) (twopc.Outcome, error) {
	ch := make(chan result, 1)
	err := c.node.Post(ctx, c.done, func() {
		w, dup := c.waiters[tx]
		if dup {
			w.more = append(w.more, ch)
		} else {
			w.first = ch
		}
		c.waiters[tx] = w
		if err := c.m.Propose(tx, branches); err != nil {
			if dup {
				w.more = w.more[:len(w.more)-1]
				c.waiters[tx] = w
			} else {
				delete(c.waiters, tx)
			}
			ch <- result{err: err}
		}
	})
	if err == node.ErrStopped {
		err = ErrClosed
	}
	if err != nil {
		return twopc.Outcome{}, err
	}
	select {
	case r := <-ch:
		return r.o, r.err
	case <-ctx.Done():
		return twopc.Outcome{}, ctx.Err()
	case <-c.done:
		return twopc.Outcome{}, ErrClosed
	}
}

// Status is a snapshot of the coordinator.
type Status struct {
	Epoch    uint64
	Inflight int
}

// Status returns the epoch and the number of unfinished transactions.
func (c *Coordinator) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.node.Do(ctx, c.done, func() {
		s = Status{Epoch: c.m.Epoch(), Inflight: c.m.Inflight()}
	})
	return s, err
}

// DeadlockStats returns the machine's deadlock counters.
func (c *Coordinator) DeadlockStats(ctx context.Context) (twopc.DeadlockStats, error) {
	var s twopc.DeadlockStats
	err := c.node.Do(ctx, c.done, func() { s = c.m.DeadlockStats() })
	return s, err
}

// Close stops the loop (if running) and closes the log, syncing it.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	running := c.mu.running
	c.mu.Unlock()
	c.halt()
	if running {
		<-c.done
	}
	return c.log.Close()
}

// Log returns the coordinator's log (for stats).
func (c *Coordinator) Log() *wal.Log { return c.log }
