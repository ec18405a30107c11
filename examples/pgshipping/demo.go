package pgshipping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/participant/pgpart"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
	"github.com/dtx-dev/dtx/transport"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// DemoConfig configures a Demo.
type DemoConfig struct {
	// DSN is the shipping service's database.
	DSN string
	// DataDir holds the logs of the coordinator and of the built-in
	// services (inventory, payment, order; in memory, with their logs).
	DataDir string
	World   purchase.World
	// Zones and Capacity seed a new database (default 16 and 1,000,000).
	Zones    int
	Capacity int64
	Logger   *slog.Logger
}

// Services are the participants of every purchase in the demo.
var Services = []string{inventory.ID, payment.ID, order.ID, ID}

// Demo runs a coordinator, the three built-in services and the shipping
// service on PostgreSQL in one process: every purchase is one transaction
// across the four, one of them a PostgreSQL prepared transaction.
type Demo struct {
	Adapter  *pgpart.Adapter
	coord    *coordinator.Coordinator
	services map[string]*participant.Service
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// StartDemo opens (recovering) every component and starts them.
func StartDemo(cfg DemoConfig) (*Demo, error) {
	if cfg.Zones == 0 {
		cfg.Zones = 16
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 1_000_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ad, err := pgpart.Open(ctx, pgpart.Config{DSN: cfg.DSN, Participant: ID, Work: Work{Zones: cfg.Zones}, SweepEvery: time.Second, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := EnsureSchema(ctx, ad.Pool(), cfg.Zones, cfg.Capacity); err != nil {
		ad.Close()
		return nil, err
	}
	d := &Demo{Adapter: ad, services: map[string]*participant.Service{}}
	net := transport.NewMemNetwork(transport.Faults{}, 1)
	logCfg := wal.DefaultConfig("")
	today := time.Now()
	for _, id := range Services {
		newRes := func() (participant.Resource, error) {
			switch id {
			case inventory.ID:
				return inventory.New(cfg.World), nil
			case payment.ID:
				return payment.New(cfg.World, today), nil
			case order.ID:
				return order.New(), nil
			default:
				return ad.NewResource()
			}
		}
		s, err := participant.Open(participant.Config{
			ID: id, Dir: filepath.Join(cfg.DataDir, id), NewResource: newRes,
			Machine: twopc.DefaultParticipantConfig(id), Tick: time.Millisecond, Network: net, Log: logCfg, Logger: cfg.Logger,
		})
		if err != nil {
			d.closeAll()
			return nil, err
		}
		d.services[id] = s
	}
	d.coord, err = coordinator.Open(coordinator.Config{
		Dir: filepath.Join(cfg.DataDir, twopc.CoordinatorID), Machine: twopc.DefaultCoordinatorConfig(),
		Tick: time.Millisecond, Network: net, Log: logCfg, Logger: cfg.Logger,
	})
	if err != nil {
		d.closeAll()
		return nil, err
	}
	rctx, rcancel := context.WithCancel(context.Background())
	d.cancel = rcancel
	d.run(rctx, d.coord.Run)
	if _, err := d.coord.Status(ctx); err != nil {
		d.Close()
		return nil, err
	}
	for _, s := range d.services {
		d.run(rctx, s.Run)
	}
	for id, s := range d.services {
		if err := s.Inspect(ctx, func(*twopc.Participant, participant.Resource) {}); err != nil {
			d.Close()
			return nil, fmt.Errorf("%s did not start: %w", id, err)
		}
	}
	return d, nil
}

func (d *Demo) run(ctx context.Context, f func(context.Context) error) {
	d.wg.Add(1)
	go func() { defer d.wg.Done(); f(ctx) }()
}

// Submit runs one purchase across the four services.
func (d *Demo) Submit(ctx context.Context, req *purchase.Request) (twopc.Outcome, error) {
	op, err := req.MarshalBinary()
	if err != nil {
		return twopc.Outcome{}, err
	}
	branches := make([]twopc.Branch, len(Services))
	for i, id := range Services {
		branches[i] = twopc.Branch{Node: id, Op: op}
	}
	return d.coord.Submit(ctx, req.TxID, branches)
}

// WaitQuiet waits until no transaction is in flight and no branch is in
// doubt.
func (d *Demo) WaitQuiet(ctx context.Context) error {
	for {
		st, err := d.coord.Status(ctx)
		quiet := err == nil && st.Inflight == 0
		for _, s := range d.services {
			if !quiet {
				break
			}
			var n int
			err := s.Inspect(ctx, func(m *twopc.Participant, _ participant.Resource) { n = m.InDoubt() })
			quiet = err == nil && n == 0
		}
		if quiet {
			return d.Adapter.Flush(ctx)
		}
		select {
		case <-ctx.Done():
			return errors.New("pgshipping: still unfinished")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Orders returns the committed orders of the order service.
func (d *Demo) Orders(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	err := d.services[order.ID].Inspect(ctx, func(_ *twopc.Participant, r participant.Resource) {
		for tx := range r.(*order.Store).State().Orders {
			out[tx] = true
		}
	})
	return out, err
}

// Close stops everything; prepared transactions are recovered at the next
// start.
func (d *Demo) Close() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.closeAll()
}

func (d *Demo) closeAll() {
	for _, s := range d.services {
		s.Close()
	}
	if d.coord != nil {
		d.coord.Close()
	}
	d.Adapter.Close()
}
