package pgpart

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// ledger is the other participant of the tests' transactions, in memory
// with its own log: it refuses amounts divisible by 13 (a NO from the
// other side), and remembers what committed.
type ledger struct {
	prepared  map[string]bool
	committed map[string]bool
}

func newLedger() *ledger { return &ledger{prepared: map[string]bool{}, committed: map[string]bool{}} }

func (l *ledger) Keys(tx string, op []byte) ([]string, error) {
	if _, _, err := parseOp(op); err != nil {
		return nil, err
	}
	return []string{"tx:" + tx}, nil
}

func (l *ledger) Prepare(tx string, op []byte) error {
	_, amt, err := parseOp(op)
	if err != nil {
		return err
	}
	if amt%13 == 0 {
		return fmt.Errorf("ledger refuses amount %d", amt)
	}
	l.prepared[tx] = true
	return nil
}

func (l *ledger) Commit(tx string, _ []byte) { delete(l.prepared, tx); l.committed[tx] = true }
func (l *ledger) Abort(tx string, _ []byte)  { delete(l.prepared, tx) }

// cluster is a coordinator, the bank on PostgreSQL and the ledger, in one
// process over an in-process network, on one data directory.
type cluster struct {
	coord   *coordinator.Coordinator
	bank    *participant.Service
	ledger  *participant.Service
	adapter *Adapter
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
}

type clusterOpts struct {
	crashRate  float64 // the bank's simulated crashes (SDK faults)
	seed       uint64
	sweepEvery time.Duration
}

func startCluster(dir, dsn string, o clusterOpts) (*cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if o.sweepEvery == 0 {
		o.sweepEvery = 100 * time.Millisecond
	}
	ad, err := Open(ctx, Config{DSN: dsn, Participant: "bank", Work: bank{}, SweepEvery: o.sweepEvery,
		LockTimeout: 300 * time.Millisecond, StatementTimeout: 3 * time.Second, OwnerWait: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	if err := bankSchema(ctx, ad.Pool()); err != nil {
		ad.Close()
		return nil, err
	}
	c := &cluster{adapter: ad, errs: make(chan error, 4)}
	net := transport.NewMemNetwork(transport.Faults{}, o.seed)
	logCfg := wal.DefaultConfig("")
	logCfg.PreallocSize = 0
	pcfg := func(id string) twopc.ParticipantConfig {
		m := twopc.DefaultParticipantConfig(id)
		m.InquireAfter, m.InquireMax, m.LockTimeout = 200, 1000, 500
		return m
	}
	c.bank, err = participant.Open(participant.Config{
		ID: "bank", Dir: filepath.Join(dir, "bank"), NewResource: ad.NewResource, Machine: pcfg("bank"),
		Tick: time.Millisecond, Network: net, Log: logCfg,
		Faults: participant.Faults{CrashRate: o.crashRate, Downtime: 10 * time.Millisecond, Seed: o.seed},
	})
	if err != nil {
		ad.Close()
		return nil, err
	}
	c.ledger, err = participant.Open(participant.Config{
		ID: "ledger", Dir: filepath.Join(dir, "ledger"), NewResource: func() (participant.Resource, error) { return newLedger(), nil },
		Machine: pcfg("ledger"), Tick: time.Millisecond, Network: net, Log: logCfg,
	})
	if err != nil {
		c.bank.Close()
		ad.Close()
		return nil, err
	}
	mc := twopc.DefaultCoordinatorConfig()
	mc.PrepareTimeout = 2000
	c.coord, err = coordinator.Open(coordinator.Config{Dir: filepath.Join(dir, "coordinator"), Machine: mc, Tick: time.Millisecond, Network: net, Log: logCfg})
	if err != nil {
		c.bank.Close()
		c.ledger.Close()
		ad.Close()
		return nil, err
	}
	rctx, rcancel := context.WithCancel(context.Background())
	c.cancel = rcancel
	run := func(f func(context.Context) error) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := f(rctx); err != nil {
				select {
				case c.errs <- err:
				default:
				}
			}
		}()
	}
	run(c.coord.Run)
	if _, err := c.coord.Status(ctx); err != nil {
		c.Close()
		return nil, err
	}
	run(c.bank.Run)
	run(c.ledger.Run)
	for _, s := range []*participant.Service{c.bank, c.ledger} {
		if err := s.Inspect(ctx, func(*twopc.Participant, participant.Resource) {}); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) Close() {
	c.cancel()
	c.wg.Wait()
	c.bank.Close()
	c.ledger.Close()
	c.coord.Close()
	c.adapter.Close()
}

// txOp is transaction i's operation in a run with this seed: a random
// account and amount (some divisible by 13: the ledger votes NO; some
// large: the bank may run out of funds).
func txOp(seed uint64, i int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	amt := 1 + r.Int64N(60_000)
	return []byte(fmt.Sprintf("a%d:%d", r.IntN(bankAccounts), amt))
}

func txID(i int) string { return fmt.Sprintf("k%d", i) }

func (c *cluster) submit(ctx context.Context, seed uint64, i int) (twopc.Outcome, error) {
	op := txOp(seed, i)
	return c.coord.Submit(ctx, txID(i), []twopc.Branch{{Node: "bank", Op: op}, {Node: "ledger", Op: op}})
}

// load submits transactions 0..n-1 from workers until done or ctx ends.
func (c *cluster) load(ctx context.Context, seed uint64, n, workers int) {
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				c.submit(sctx, seed, i)
				cancel()
			}
		}()
	}
	wg.Wait()
}

// settle resubmits every transaction (a duplicate gets its first outcome;
// one the coordinator never heard of runs now), waits until nothing is
// in flight, in doubt or prepared, and checks that the bank's rows, the
// ledger and the outcomes agree.
func (c *cluster) settle(seed uint64, n int, dsn string) (committed int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	outcomes := make([]twopc.Outcome, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := c.submit(ctx, seed, i)
			if err != nil {
				errs <- fmt.Errorf("resubmit %s: %w", txID(i), err)
				return
			}
			outcomes[i] = o
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	var orders map[string]bool
	var ledgerCommitted map[string]bool
	for {
		err = nil
		st, serr := c.coord.Status(ctx)
		var bankDoubt, ledgerDoubt int
		berr := c.bank.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { bankDoubt = m.InDoubt() })
		lerr := c.ledger.Inspect(ctx, func(m *twopc.Participant, r participant.Resource) {
			ledgerDoubt = m.InDoubt()
			ledgerCommitted = map[string]bool{}
			for tx := range r.(*ledger).committed {
				ledgerCommitted[tx] = true
			}
		})
		switch {
		case serr != nil || berr != nil || lerr != nil:
			err = errors.Join(serr, berr, lerr)
		case st.Inflight > 0 || bankDoubt > 0 || ledgerDoubt > 0:
			err = fmt.Errorf("not quiet: %d in flight, %d in doubt at the bank, %d at the ledger", st.Inflight, bankDoubt, ledgerDoubt)
		default:
			orders, err = bankCheck(ctx, dsn, c.adapter.Owner())
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("did not settle: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var bad []string
	for i, o := range outcomes {
		tx := txID(i)
		if o.Committed != orders[tx] || o.Committed != ledgerCommitted[tx] {
			bad = append(bad, fmt.Sprintf("%s: outcome committed=%v (%s), bank row %v, ledger %v", tx, o.Committed, o.Reason, orders[tx], ledgerCommitted[tx]))
		}
		if o.Committed {
			committed++
		}
	}
	for tx := range orders {
		if !strings.HasPrefix(tx, "k") {
			bad = append(bad, "unknown order "+tx)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return committed, fmt.Errorf("atomicity violated (%d):\n%s", len(bad), strings.Join(bad, "\n"))
	}
	if h := c.adapter.Stats().Heuristic; h > 0 {
		return committed, fmt.Errorf("%d heuristic outcomes", h)
	}
	return committed, nil
}
