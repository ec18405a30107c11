package pgpart

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/twopc"
)

// Querier is what a branch's work may use: the branch's open transaction.
// It must not end it (no COMMIT, ROLLBACK or PREPARE TRANSACTION): the
// adapter does.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Work is the business side of a PostgreSQL-backed participant.
type Work interface {
	// Keys returns the keys the branch locks in dtx's lock table (strict
	// two-phase locking and global deadlock detection), or an error if the
	// operation is malformed (the branch votes NO with it). Name the rows
	// the branch changes: then no two branches of this participant ever
	// wait for each other's row locks inside PostgreSQL.
	Keys(tx string, op []byte) ([]string, error)
	// Prepare does the branch's work in q, an open transaction: lock the
	// rows it reads with SELECT … FOR UPDATE, check, write. An error is a
	// NO vote with the error's text as the reason; the transaction is
	// rolled back. It must not keep q.
	Prepare(ctx context.Context, q Querier, tx string, op []byte) error
}

// Config configures an Adapter.
type Config struct {
	// DSN is the database's connection string (postgres://…). Ignored if
	// Pool is set.
	DSN string
	// Pool, if set, is used instead of opening one from DSN (Close leaves
	// it open). Its connections should set lock_timeout and
	// statement_timeout; those opened from DSN do (LockTimeout,
	// StatementTimeout).
	Pool *pgxpool.Pool
	// Group names the coordinator group (default "dtx") and Participant
	// the service (its node name): together they name the adapter's
	// prepared transactions (OwnerTag). One process at a time may own
	// them (an advisory lock in the database).
	Group, Participant string
	Work               Work
	// LockTimeout bounds a branch's wait for a row lock inside PostgreSQL
	// (a lock held outside dtx, or a local cycle); the branch then votes
	// NO. Default 2s.
	LockTimeout time.Duration
	// StatementTimeout bounds every statement. Default 10s.
	StatementTimeout time.Duration
	// SweepEvery is the period of the recovery sweep (default 5s).
	SweepEvery time.Duration
	// DecisionWorkers run COMMIT PREPARED and ROLLBACK PREPARED off the
	// participant's loop (default 4; -1: on the loop). The loop then goes
	// on to its next message while PostgreSQL syncs the decision; see the
	// package doc for why the ACK may leave before the statement is done.
	DecisionWorkers int
	// OwnerWait is how long Open waits for the owner lock held by another
	// session (a killed predecessor whose session PostgreSQL has not
	// reaped yet). Default 10s.
	OwnerWait time.Duration
	Logger    *slog.Logger
}

// Stats counts what the adapter did.
type Stats struct {
	Prepared, Committed, Aborted, VotedNo uint64
	// AlreadyDone counts COMMIT PREPARED or ROLLBACK PREPARED that found
	// the gid gone because it had been resolved before (a retry).
	AlreadyDone uint64
	// Retried counts decisions left to the sweep after a failed statement.
	Retried uint64
	// OrphansRolledBack counts prepared transactions of this owner that no
	// live branch and no logged decision claimed, rolled back by a sweep.
	OrphansRolledBack uint64
	// Heuristic counts gids found resolved the other way than dtx decided
	// (someone ran COMMIT/ROLLBACK PREPARED by hand). Never expected.
	Heuristic uint64
	Sweeps    uint64
}

// Adapter connects a participant to PostgreSQL. Its NewResource is the
// participant's Config.NewResource.
type Adapter struct {
	cfg     Config
	owner   string
	prefix  string
	pool    *pgxpool.Pool
	ownPool bool
	log     *slog.Logger

	// sweepMu serializes sweeps with each other and with the start of a
	// new incarnation; it guards ownerConn.
	sweepMu   sync.Mutex
	ownerConn *pgx.Conn

	// mu guards inc (and the sets in it). A sweep holds mu while it
	// decides about a gid and resolves it.
	mu  sync.Mutex
	inc *incarnation

	stats struct {
		prepared, committed, aborted, votedNo, alreadyDone, retried, orphans, heuristic, sweeps atomic.Uint64
	}
	stop context.CancelFunc
	done chan struct{}

	// Decisions run on DecisionWorkers goroutines fed by jobs (nil: on
	// the participant's loop); queued counts those not done yet.
	jobs    chan job
	queued  atomic.Int64
	workers sync.WaitGroup
	closing bool // under mu: decisions run inline from now on
}

// incarnation is what the adapter knows of one life of its participant
// machine: from NewResource (a replay follows) to the next NewResource.
type incarnation struct {
	replaying bool
	// live: gids this incarnation prepared or is preparing, or that its
	// log replayed as prepared, and that are not decided yet. A sweep
	// never touches them.
	live map[string]struct{}
	// pending: decided gids that may still be prepared in PostgreSQL:
	// replayed decisions, and live decisions whose statement failed. A
	// sweep applies them.
	pending map[string]decision
}

// decision is a pending decision about a gid.
type decision struct {
	commit bool
	// verify: the decision was taken live and its statement failed; once
	// the gid is gone, check it went this way (dtx_branches). Replayed
	// decisions are not checked: a gid no longer prepared was resolved in
	// an earlier life, and checking every one would cost a statement per
	// branch in the log at every start.
	verify bool
}

// Open connects to the database, creates the adapter's tables if needed,
// takes the owner lock (one process per group and participant), and
// starts the periodic sweep. The first sweep that may resolve anything
// runs when the participant's log has been replayed (Recover).
func Open(ctx context.Context, cfg Config) (*Adapter, error) {
	if cfg.Group == "" {
		cfg.Group = "dtx"
	}
	if err := checkName("group", cfg.Group); err != nil {
		return nil, err
	}
	if err := checkName("participant", cfg.Participant); err != nil {
		return nil, err
	}
	if cfg.Work == nil {
		return nil, errors.New("pgpart: Config.Work is required")
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = 2 * time.Second
	}
	if cfg.StatementTimeout <= 0 {
		cfg.StatementTimeout = 10 * time.Second
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 5 * time.Second
	}
	if cfg.OwnerWait <= 0 {
		cfg.OwnerWait = 10 * time.Second
	}
	switch {
	case cfg.DecisionWorkers == 0:
		cfg.DecisionWorkers = 4
	case cfg.DecisionWorkers < 0:
		cfg.DecisionWorkers = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Adapter{
		cfg:  cfg,
		inc:  &incarnation{replaying: true, live: map[string]struct{}{}, pending: map[string]decision{}},
		done: make(chan struct{}),
	}
	if cfg.Pool != nil {
		a.pool = cfg.Pool
	} else {
		if cfg.DSN == "" {
			return nil, errors.New("pgpart: Config.DSN or Config.Pool is required")
		}
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("pgpart: bad DSN: %w", err)
		}
		setSessionDefaults(pc.ConnConfig, cfg)
		if pc.MaxConns < 8 {
			pc.MaxConns = 8
		}
		a.pool, err = pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("pgpart: %w", err)
		}
		a.ownPool = true
	}
	fail := func(err error) (*Adapter, error) {
		if a.ownPool {
			a.pool.Close()
		}
		return nil, err
	}
	var db string
	if err := a.pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return fail(fmt.Errorf("pgpart: %w", err))
	}
	a.owner = OwnerTag(cfg.Group, cfg.Participant, db)
	a.prefix = gidPrefix(a.owner)
	a.log = cfg.Logger.With("participant", cfg.Participant, "pg_owner", a.owner)
	if err := EnsureSchema(ctx, a.pool); err != nil {
		return fail(err)
	}
	if err := a.registerOwner(ctx); err != nil {
		return fail(err)
	}
	if err := a.lockOwner(ctx, cfg.OwnerWait); err != nil {
		return fail(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	go a.sweepLoop(sctx)
	if cfg.DecisionWorkers > 0 {
		a.jobs = make(chan job, 1024)
		for range cfg.DecisionWorkers {
			a.workers.Add(1)
			go a.decider()
		}
	}
	return a, nil
}

// setSessionDefaults makes every session of the adapter bound its waits:
// a row lock (lock_timeout), a statement, and an open transaction left
// idle (a stuck adapter must not hold rows forever; prepared transactions
// are not sessions and are not affected).
func setSessionDefaults(cc *pgx.ConnConfig, cfg Config) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(cfg.LockTimeout.Milliseconds(), 10)
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt((6 * cfg.StatementTimeout).Milliseconds(), 10)
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "dtx-" + cfg.Participant
	}
}

// Owner returns the adapter's owner tag (OwnerTag).
func (a *Adapter) Owner() string { return a.owner }

// Pool returns the adapter's connection pool.
func (a *Adapter) Pool() *pgxpool.Pool { return a.pool }

// GID returns the gid of attempt attempt of tx's branch here.
func (a *Adapter) GID(tx string, attempt uint32) (string, error) { return GID(a.owner, tx, attempt) }

// Stats returns the adapter's counters.
func (a *Adapter) Stats() Stats {
	s := &a.stats
	return Stats{
		Prepared: s.prepared.Load(), Committed: s.committed.Load(), Aborted: s.aborted.Load(), VotedNo: s.votedNo.Load(),
		AlreadyDone: s.alreadyDone.Load(), Retried: s.retried.Load(), OrphansRolledBack: s.orphans.Load(),
		Heuristic: s.heuristic.Load(), Sweeps: s.sweeps.Load(),
	}
}

// Close stops the sweep, releases the owner lock and closes the pool if
// Open made it. Prepared transactions stay prepared: the next Open (after
// the participant's log is replayed) resolves them.
func (a *Adapter) Close() error {
	a.mu.Lock()
	closing := a.closing
	a.closing = true
	a.mu.Unlock()
	if a.jobs != nil && !closing {
		close(a.jobs) // the queued decisions run first
		a.workers.Wait()
	}
	a.stop()
	<-a.done
	a.sweepMu.Lock()
	defer a.sweepMu.Unlock()
	if a.ownerConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.ownerConn.Close(ctx)
		cancel()
		a.ownerConn = nil
	}
	if a.ownPool {
		a.pool.Close()
	}
	return nil
}

// NewResource starts a new incarnation of the participant (its log is
// about to be replayed into the resource returned) and returns its
// resource. Use it as participant.Config.NewResource.
func (a *Adapter) NewResource() (participant.Resource, error) {
	a.sweepMu.Lock() // no sweep spans two incarnations
	defer a.sweepMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	inc := &incarnation{replaying: true, live: map[string]struct{}{}, pending: map[string]decision{}}
	a.inc = inc
	return &resource{a: a, inc: inc}, nil
}

// resource is one incarnation's twopc.AttemptResource.
type resource struct {
	a   *Adapter
	inc *incarnation
}

var (
	_ twopc.AttemptResource = (*resource)(nil)
	_ participant.Recoverer = (*resource)(nil)
)

func (r *resource) Keys(tx string, op []byte) ([]string, error) {
	if err := CheckTxID(tx); err != nil {
		return nil, err
	}
	return r.a.cfg.Work.Keys(tx, op)
}

// The machine calls the attempt methods; these are for completeness.
func (r *resource) Prepare(tx string, op []byte) error { return r.PrepareAttempt(tx, 1, op) }
func (r *resource) Commit(tx string, op []byte)        { r.CommitAttempt(tx, 1, op) }
func (r *resource) Abort(tx string, op []byte)         { r.AbortAttempt(tx, 1, op) }

// PrepareAttempt runs the branch in a new transaction and prepares it
// (PREPARE TRANSACTION); nil means it is durably prepared in PostgreSQL.
// On replay it only takes note that the log says the gid is prepared.
func (r *resource) PrepareAttempt(tx string, attempt uint32, op []byte) error {
	a := r.a
	gid, err := a.GID(tx, attempt)
	if err != nil {
		return err
	}
	a.mu.Lock()
	replaying := r.inc.replaying
	// Live before BEGIN: from here on no sweep touches the gid.
	r.inc.live[gid] = struct{}{}
	delete(r.inc.pending, gid)
	a.mu.Unlock()
	if replaying {
		return nil
	}
	maybe, err := a.prepare(gid, tx, attempt, op)
	if err == nil {
		a.stats.prepared.Add(1)
		return nil
	}
	a.stats.votedNo.Add(1)
	a.mu.Lock()
	delete(r.inc.live, gid)
	if maybe {
		// The PREPARE may or may not have happened (a lost connection
		// after it was sent). The vote is NO: roll the gid back if it is
		// there, now or in the next sweep (gone is expected: nothing to
		// check).
		r.inc.pending[gid] = decision{}
	}
	a.mu.Unlock()
	if maybe && a.resolve(gid, false, false) == nil {
		a.mu.Lock()
		delete(r.inc.pending, gid)
		a.mu.Unlock()
	}
	return err
}

// prepare runs the branch's transaction and prepares it. maybePrepared
// says a failure came after PREPARE TRANSACTION was sent.
func (a *Adapter) prepare(gid, tx string, attempt uint32, op []byte) (maybePrepared bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*a.cfg.StatementTimeout)
	defer cancel()
	pc, err := a.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("postgres unavailable: %w", err)
	}
	conn := pc.Conn()
	defer func() {
		if conn.PgConn().TxStatus() != 'I' {
			// Never hand back a connection inside a transaction.
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			ccancel()
		}
		pc.Release()
	}()
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return false, fmt.Errorf("postgres: begin: %w", err)
	}
	if err := a.cfg.Work.Prepare(ctx, conn, tx, op); err != nil {
		a.rollbackOpen(conn)
		return false, err
	}
	switch st := conn.PgConn().TxStatus(); st {
	case 'T':
	case 'E':
		a.rollbackOpen(conn)
		return false, errors.New("postgres: the branch's transaction failed (a statement error was not returned by the work)")
	default:
		return false, fmt.Errorf("postgres: the branch's work ended its transaction (status %q); it must leave it open", st)
	}
	quoted, err := quoteGID(gid)
	if err != nil {
		a.rollbackOpen(conn)
		return false, err
	}
	// One round trip: the branch's row (visible only once committed: the
	// proof that this gid committed), then PREPARE TRANSACTION. The gid
	// cannot be a bind parameter there; it is a checked literal.
	var b pgconn.Batch
	b.ExecParams("INSERT INTO dtx_branches (gid, owner, tx, attempt) VALUES ($1, $2, $3, $4)",
		[][]byte{[]byte(gid), []byte(a.owner), []byte(tx), []byte(strconv.FormatUint(uint64(attempt), 10))},
		nil, nil, nil)
	b.ExecParams("PREPARE TRANSACTION "+quoted, nil, nil, nil, nil)
	res, err := conn.PgConn().ExecBatch(ctx, &b).ReadAll()
	if err == nil {
		for _, r := range res {
			if r.Err != nil {
				err = r.Err
				break
			}
		}
	}
	if err == nil {
		return false, nil
	}
	a.rollbackOpen(conn)
	return true, fmt.Errorf("postgres: prepare transaction: %w", err)
}

// rollbackOpen ends conn's open (not prepared) transaction, if any.
func (a *Adapter) rollbackOpen(conn *pgx.Conn) {
	if conn.PgConn().TxStatus() == 'I' || conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StatementTimeout)
	defer cancel()
	if _, err := conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		conn.Close(ctx)
	}
}

// CommitAttempt commits the prepared gid (COMMIT PREPARED). A gid already
// gone was committed by an earlier try (see the package doc); a failed
// statement leaves the decision to the sweep. It never blocks the
// participant for longer than one statement.
func (r *resource) CommitAttempt(tx string, attempt uint32, _ []byte) {
	r.decide(tx, attempt, true)
}

// AbortAttempt rolls the prepared gid back (ROLLBACK PREPARED), likewise.
func (r *resource) AbortAttempt(tx string, attempt uint32, _ []byte) {
	r.decide(tx, attempt, false)
}

func (r *resource) decide(tx string, attempt uint32, commit bool) {
	a := r.a
	gid, err := a.GID(tx, attempt)
	if err != nil {
		// The machine only decides branches it prepared, whose ids passed.
		a.log.Error("decision for a branch with a bad id", "tx", tx, "err", err)
		return
	}
	a.mu.Lock()
	if r.inc.replaying {
		delete(r.inc.live, gid)
		r.inc.pending[gid] = decision{commit: commit}
		a.mu.Unlock()
		return
	}
	async := a.jobs != nil && !a.closing
	if async {
		a.queued.Add(1)
	}
	a.mu.Unlock()
	if async {
		a.jobs <- job{inc: r.inc, gid: gid, commit: commit}
		return
	}
	a.apply(job{inc: r.inc, gid: gid, commit: commit})
}

// job is a decision to apply in PostgreSQL.
type job struct {
	inc    *incarnation
	gid    string
	commit bool
}

// apply runs a decision's statement. The gid stays live until the
// statement is done: a sweep meanwhile leaves it alone. Then it leaves
// live, or moves to pending (the sweep retries it), at once.
func (a *Adapter) apply(j job) {
	err := a.resolve(j.gid, j.commit, true)
	a.mu.Lock()
	delete(j.inc.live, j.gid)
	if err != nil {
		j.inc.pending[j.gid] = decision{commit: j.commit, verify: true}
	}
	a.mu.Unlock()
	if err != nil {
		a.stats.retried.Add(1)
		a.log.Warn("decision left to the sweep", "gid", j.gid, "commit", j.commit, "err", err)
	}
}

// decider applies queued decisions (Config.DecisionWorkers of them run).
func (a *Adapter) decider() {
	defer a.workers.Done()
	for j := range a.jobs {
		a.apply(j)
		a.queued.Add(-1)
	}
}

// Flush waits until every decision handed to the adapter so far has run
// its statement (or was left to the sweep), or ctx ends.
func (a *Adapter) Flush(ctx context.Context) error {
	for a.queued.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// sqlState returns err's SQLSTATE, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// undefinedObject is the SQLSTATE of COMMIT/ROLLBACK PREPARED for a gid
// that is not prepared.
const undefinedObject = "42704"

// resolve commits or rolls back gid on a pooled connection. A gid that is
// not prepared (any more) counts as done, after checking that it went the
// way it should have (its dtx_branches row exists iff it committed).
func (a *Adapter) resolve(gid string, commit, check bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*a.cfg.StatementTimeout)
	defer cancel()
	pc, err := a.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer pc.Release()
	_, err = a.resolveOn(ctx, pc.Conn(), gid, commit, check)
	return err
}

// resolveOn commits or rolls back gid on conn. done says the statement
// resolved it; a gid that is not prepared is checked (check) or not.
func (a *Adapter) resolveOn(ctx context.Context, conn *pgx.Conn, gid string, commit, check bool) (done bool, err error) {
	quoted, err := quoteGID(gid)
	if err != nil {
		return false, err
	}
	stmt := "ROLLBACK PREPARED " + quoted
	if commit {
		stmt = "COMMIT PREPARED " + quoted
	}
	_, err = conn.PgConn().Exec(ctx, stmt).ReadAll()
	switch {
	case err == nil:
		if commit {
			a.stats.committed.Add(1)
		} else {
			a.stats.aborted.Add(1)
		}
		return true, nil
	case sqlState(err) != undefinedObject:
		return false, err
	case !check:
		return false, nil
	}
	// Gone: resolved earlier. Check which way, once.
	var committed bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM dtx_branches WHERE gid = $1)", gid).Scan(&committed); err != nil {
		return false, err
	}
	if committed != commit {
		a.stats.heuristic.Add(1)
		a.log.Error("prepared transaction was resolved the other way outside dtx (heuristic outcome)",
			"gid", gid, "dtx_decision_commit", commit, "database_committed", committed)
		return false, nil // reported; retrying cannot change it
	}
	a.stats.alreadyDone.Add(1)
	return false, nil
}

// Recover ends the replay of the participant's log: the adapter now knows
// every gid the log says is prepared (live) or decided (pending), and
// runs a sweep. A sweep that fails (PostgreSQL down) is retried by the
// periodic sweep; serving meanwhile is safe (see the package doc).
func (r *resource) Recover() error {
	a := r.a
	a.mu.Lock()
	r.inc.replaying = false
	live := len(r.inc.live)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 4*a.cfg.StatementTimeout)
	defer cancel()
	res, err := a.Sweep(ctx)
	if err != nil {
		a.log.Warn("recovery sweep failed; the periodic sweep retries", "err", err)
		return nil
	}
	a.log.Info("recovered", "in_doubt", live, "committed", res.Committed, "rolled_back", res.RolledBack, "orphans", res.Orphans)
	return nil
}

// SweepResult says what one sweep did.
type SweepResult struct {
	Listed, Live, Committed, RolledBack, Orphans int
}

// Sweep lists the prepared transactions of this owner in the database and
// resolves every one that no live branch claims: a logged decision is
// applied, anything else is rolled back (its YES vote never left: see the
// package doc). It runs on the connection that holds the owner lock.
func (a *Adapter) Sweep(ctx context.Context) (SweepResult, error) {
	a.sweepMu.Lock()
	defer a.sweepMu.Unlock()
	var res SweepResult
	a.mu.Lock()
	inc := a.inc
	replaying := inc.replaying
	a.mu.Unlock()
	if replaying {
		return res, nil // the log is not replayed yet: nothing is known
	}
	a.stats.sweeps.Add(1)
	conn, err := a.ensureOwner(ctx)
	if err != nil {
		return res, err
	}
	rows, err := conn.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1) ORDER BY prepared", a.prefix)
	if err != nil {
		return res, a.ownerFailed(err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, a.ownerFailed(err)
	}
	res.Listed = len(gids)
	listed := make(map[string]bool, len(gids))
	for _, gid := range gids {
		listed[gid] = true
		// Decide and resolve under mu: a branch enters live (under mu)
		// before its BEGIN, so a gid rolled back here was not live at any
		// moment between the check and the rollback.
		a.mu.Lock()
		if _, ok := inc.live[gid]; ok {
			a.mu.Unlock()
			res.Live++
			continue
		}
		d, decided := inc.pending[gid]
		commit := d.commit
		// An undecided gid that is gone by now was resolved by its own
		// branch after the listing: no orphan, nothing to check.
		done, err := a.resolveOn(ctx, conn, gid, commit && decided, decided && d.verify)
		if err == nil {
			delete(inc.pending, gid)
		}
		a.mu.Unlock()
		if err != nil {
			return res, a.ownerFailed(err)
		}
		switch {
		case !done:
		case commit && decided:
			res.Committed++
		case decided:
			res.RolledBack++
		default:
			res.Orphans++
			a.stats.orphans.Add(1)
			a.log.Info("rolled back an orphaned prepared transaction (no logged YES vote)", "gid", gid)
		}
	}
	// Decisions whose gid is no longer prepared are done; check the
	// committed ones really committed.
	a.mu.Lock()
	var verify []string
	for gid, d := range inc.pending {
		switch {
		case listed[gid]:
		case d.verify:
			verify = append(verify, gid)
		default:
			delete(inc.pending, gid)
		}
	}
	a.mu.Unlock()
	for _, gid := range verify {
		a.mu.Lock()
		d, ok := inc.pending[gid]
		var err error
		if ok {
			if _, err = a.resolveOn(ctx, conn, gid, d.commit, true); err == nil {
				delete(inc.pending, gid)
			}
		}
		a.mu.Unlock()
		if err != nil {
			return res, a.ownerFailed(err)
		}
	}
	return res, nil
}

func (a *Adapter) sweepLoop(ctx context.Context) {
	defer close(a.done)
	t := time.NewTicker(a.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 4*a.cfg.StatementTimeout)
		if res, err := a.Sweep(sctx); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("sweep failed", "err", err)
			}
		} else if res.Orphans+res.Committed+res.RolledBack > 0 {
			a.log.Info("sweep resolved prepared transactions", "committed", res.Committed, "rolled_back", res.RolledBack, "orphans", res.Orphans)
		}
		cancel()
	}
}

// The owner lock: an advisory lock in the database, held by a dedicated
// session for as long as the adapter runs, so that one process at a time
// resolves the owner's prepared transactions. Sweeps run their statements
// on that session: a statement that runs there proves the lock is held
// (the lock goes only with the session).

// ownerLockKey is the advisory lock (class, object) of owner.
func ownerLockKey(owner string) (int32, int32) {
	h := fnv.New32a()
	h.Write([]byte(owner))
	return 0x64747831, int32(h.Sum32()) // class "dtx1"
}

func (a *Adapter) lockOwner(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := a.tryLockOwner(ctx)
		if err == nil || !errors.Is(err, errOwnerBusy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errOwnerBusy = errors.New("held by another session")

func (a *Adapter) tryLockOwner(ctx context.Context) error {
	cc := a.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("pgpart: connect: %w", err)
	}
	c, o := ownerLockKey(a.owner)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", c, o).Scan(&ok); err != nil {
		conn.Close(ctx)
		return fmt.Errorf("pgpart: owner lock: %w", err)
	}
	if !ok {
		conn.Close(ctx)
		return fmt.Errorf("pgpart: participant %s of group %s (owner %s) is served by another process on this database: owner lock %w",
			a.cfg.Participant, a.cfg.Group, a.owner, errOwnerBusy)
	}
	a.ownerConn = conn
	return nil
}

// ensureOwner returns the owner session, reconnecting and relocking after
// a lost session (PostgreSQL restarted). Called under sweepMu.
func (a *Adapter) ensureOwner(ctx context.Context) (*pgx.Conn, error) {
	if a.ownerConn != nil && !a.ownerConn.IsClosed() {
		return a.ownerConn, nil
	}
	a.ownerConn = nil
	if err := a.tryLockOwner(ctx); err != nil {
		return nil, err
	}
	return a.ownerConn, nil
}

// ownerFailed drops a broken owner session (the next sweep reconnects).
func (a *Adapter) ownerFailed(err error) error {
	if a.ownerConn != nil && (a.ownerConn.IsClosed() || sqlState(err) == "") {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a.ownerConn.Close(ctx)
		cancel()
		a.ownerConn = nil
	}
	return err
}

func (a *Adapter) registerOwner(ctx context.Context) error {
	if _, err := a.pool.Exec(ctx, "INSERT INTO dtx_owners (owner, grp, participant) VALUES ($1, $2, $3) ON CONFLICT (owner) DO NOTHING",
		a.owner, a.cfg.Group, a.cfg.Participant); err != nil {
		return fmt.Errorf("pgpart: register owner: %w", err)
	}
	var grp, part string
	if err := a.pool.QueryRow(ctx, "SELECT grp, participant FROM dtx_owners WHERE owner = $1", a.owner).Scan(&grp, &part); err != nil {
		return fmt.Errorf("pgpart: register owner: %w", err)
	}
	if grp != a.cfg.Group || part != a.cfg.Participant {
		return fmt.Errorf("pgpart: owner tag %s of group %s participant %s is taken by group %s participant %s: rename one",
			a.owner, a.cfg.Group, a.cfg.Participant, grp, part)
	}
	return nil
}

// EnsureSchema creates the adapter's tables if they do not exist:
// dtx_owners (owner tag → group and participant) and dtx_branches (one
// row per committed branch, written inside the branch's own transaction).
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(t pgx.Tx) error {
		// Serialize concurrent first uses (CREATE … IF NOT EXISTS races).
		if _, err := t.Exec(ctx, "SELECT pg_advisory_xact_lock(1685354545, 0)"); err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `
CREATE TABLE IF NOT EXISTS dtx_owners (
	owner       text PRIMARY KEY,
	grp         text NOT NULL,
	participant text NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("pgpart: create tables: %w", err)
		}
		_, err := t.Exec(ctx, `
CREATE TABLE IF NOT EXISTS dtx_branches (
	gid          text PRIMARY KEY,
	owner        text NOT NULL,
	tx           text NOT NULL,
	attempt      integer NOT NULL CHECK (attempt > 0),
	committed_at timestamptz NOT NULL DEFAULT now()
)`)
		if err != nil {
			return fmt.Errorf("pgpart: create tables: %w", err)
		}
		return nil
	})
}
