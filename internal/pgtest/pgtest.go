// Package pgtest starts private PostgreSQL servers for tests, CI and local
// trials: initdb into a fresh temporary directory, a free loopback port,
// fsync on, max_prepared_transactions > 0 (two-phase commit needs it), no
// Unix socket outside that directory.
//
// It uses the server binaries of the machine (Debian installs them under
// /usr/lib/postgresql/<version>/bin; PGTEST_BIN overrides the directory).
// PostgreSQL refuses to run as root, so when the tests run as root the
// server runs as the "postgres" user, in a directory owned by it.
//
// In tests, missing binaries skip the test with a message saying so,
// except under CI=true, where they fail it: CI installs the server, and a
// broken install must be noticed.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/freeport"
)

// ErrNoServer is returned when no PostgreSQL server binaries are found.
var ErrNoServer = errors.New("pgtest: no PostgreSQL server binaries (looked in $PGTEST_BIN and /usr/lib/postgresql/*/bin; install them with: apt-get install -y postgresql)")

// dirPrefix names the temporary directories of servers started here; a
// server left behind by a killed test process is stopped and removed by
// the next Start (its owner.pid names a dead process).
const dirPrefix = "dtx-pgtest-"

// Options configure a server. The zero value is fine.
type Options struct {
	// Port to listen on (127.0.0.1 only); 0 picks a free one.
	Port int
	// Dir is the base directory; "" makes a temporary one that Close removes.
	Dir string
	// MaxPreparedTransactions (default 256).
	MaxPreparedTransactions int
	// Settings are extra postgresql.conf lines, e.g. "log_min_messages = debug1".
	Settings []string
}

// Server is a private PostgreSQL server.
type Server struct {
	Bin  string // the binaries' directory
	Base string // base directory: data/, the socket, server.log
	Port int

	cred    *syscall.Credential // run the server as this user (nil: as ourselves)
	ownBase bool
	mu      sync.Mutex
	running bool
}

// BinDir returns the directory of the server binaries: $PGTEST_BIN, or the
// newest /usr/lib/postgresql/<version>/bin with a postgres binary.
func BinDir() (string, error) {
	if d := os.Getenv("PGTEST_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("pgtest: PGTEST_BIN=%s: %w", d, err)
		}
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(found) == 0 {
		return "", ErrNoServer
	}
	sort.Slice(found, func(i, j int) bool { return versionOf(found[i]) > versionOf(found[j]) })
	return filepath.Dir(found[0]), nil
}

func versionOf(path string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(path))), 64)
	return v
}

// New initializes and starts a server.
func New(opts Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cleanStale(bin)
	s := &Server{Bin: bin, Port: opts.Port}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root and no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if opts.Dir == "" {
		s.Base, err = os.MkdirTemp("", dirPrefix)
		if err != nil {
			return nil, err
		}
		s.ownBase = true
	} else {
		s.Base = opts.Dir
		if err := os.MkdirAll(s.Base, 0o700); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*Server, error) {
		if s.ownBase {
			os.RemoveAll(s.Base)
		}
		return nil, err
	}
	if s.ownBase { // only temporary servers are cleaned up when their owner is gone
		if err := os.WriteFile(filepath.Join(s.Base, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fail(err)
		}
	}
	if s.cred != nil {
		if err := os.Chown(s.Base, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fail(err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.data(), "PG_VERSION")); err != nil {
		if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8",
			"--locale=C", "--no-sync", "--no-instructions"); err != nil {
			return fail(fmt.Errorf("pgtest: initdb: %w\n%s", err, out))
		}
	}
	mpt := opts.MaxPreparedTransactions
	if mpt <= 0 {
		mpt = 256
	}
	// A free port can be taken by another process before the server binds
	// it: pick another one and try again (a few times).
	for try := 0; ; try++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return fail(err)
			}
		}
		s.Port = port
		conf := []string{
			"# written by pgtest",
			"listen_addresses = '127.0.0.1'",
			fmt.Sprintf("port = %d", s.Port),
			fmt.Sprintf("unix_socket_directories = '%s'", s.Base),
			"max_connections = 200",
			fmt.Sprintf("max_prepared_transactions = %d", mpt),
			"fsync = on",
			"synchronous_commit = on",
			"full_page_writes = on",
			"shared_buffers = 32MB",
			"log_min_messages = warning",
			"log_statement = none",
		}
		conf = append(conf, opts.Settings...)
		if err := s.writeAsServer(filepath.Join(s.data(), "postgresql.auto.conf"), strings.Join(conf, "\n")+"\n"); err != nil {
			return fail(err)
		}
		err = s.Start()
		if err == nil {
			return s, nil
		}
		if opts.Port != 0 || try == 2 {
			return fail(err)
		}
	}
}

func (s *Server) data() string { return filepath.Join(s.Base, "data") }

// DSN returns a connection string for database db (as the superuser
// postgres, over TCP on 127.0.0.1).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Start starts a stopped server (after Stop or Kill) and waits until it
// accepts connections. Crash recovery runs first after Kill.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	out, err := s.run("pg_ctl", "start", "-D", s.data(), "-l", filepath.Join(s.Base, "server.log"), "-w", "-t", "60", "-s")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Base, "server.log"))
		return fmt.Errorf("pgtest: pg_ctl start: %w\n%s\nserver.log:\n%s", err, out, tail(string(log), 2000))
	}
	s.running = true
	return nil
}

// Stop shuts the server down cleanly (fast mode: sessions are ended,
// prepared transactions stay).
func (s *Server) Stop() error { return s.stop("fast") }

// Kill stops the server without a shutdown checkpoint (immediate mode):
// like a crash, the next Start runs crash recovery from the server's WAL.
func (s *Server) Kill() error { return s.stop("immediate") }

// Restart kills the server (immediate mode) and starts it again.
func (s *Server) Restart() error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.Start()
}

func (s *Server) stop(mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	out, err := s.run("pg_ctl", "stop", "-D", s.data(), "-m", mode, "-w", "-t", "60", "-s")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	s.running = false
	return nil
}

// Close stops the server and removes its directory if New made it.
func (s *Server) Close() error {
	err := s.Kill()
	if s.ownBase {
		if rerr := os.RemoveAll(s.Base); err == nil {
			err = rerr
		}
	}
	return err
}

// Log returns the end of the server's log (for failure messages).
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Base, "server.log"))
	return tail(string(b), 4000)
}

// run runs one of the server's binaries as the server's user, bounded in time.
func (s *Server) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.Bin, name), args...)
	cmd.Dir = s.Base
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		cmd.Env = append(cmd.Env, "HOME="+s.Base)
	}
	return cmd.CombinedOutput()
}

func (s *Server) writeAsServer(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

// freePort picks a port below the ephemeral range (package freeport), so
// that no concurrent outgoing connection takes it before the server binds.
func freePort() (int, error) {
	a, err := freeport.Addr()
	if err != nil {
		return 0, err
	}
	_, p, err := net.SplitHostPort(a)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// cleanStale stops and removes servers of this package whose owning
// process is gone (a test binary killed by a timeout).
func cleanStale(bin string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		s := &Server{Bin: bin, Base: d, running: true}
		if os.Geteuid() == 0 {
			if fi, err := os.Stat(d); err == nil {
				st := fi.Sys().(*syscall.Stat_t)
				s.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
			}
		}
		if _, err := os.Stat(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			_ = s.Kill()
		}
		os.RemoveAll(d)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// missing skips tb, or fails it under CI=true.
func missing(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%v (CI=true: a missing server is a failure; .ci/run installs it)", err)
	}
	tb.Skipf("skipped: %v", err)
}

// Start starts a private server for one test and stops it when the test
// ends. It skips the test if the binaries are missing (fails it under
// CI=true).
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Options{})
	if errors.Is(err, ErrNoServer) {
		missing(tb, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Log(err)
		}
	})
	return s
}

var shared struct {
	sync.Mutex
	s   *Server
	err error
	n   int
}

// NewDB returns the DSN of a fresh, empty database on a server shared by
// the tests of this process (started at the first call; stop it with
// Shutdown from TestMain). It skips the test if the binaries are missing
// (fails it under CI=true).
func NewDB(tb testing.TB) string {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = New(Options{})
	}
	if errors.Is(shared.err, ErrNoServer) {
		missing(tb, shared.err)
	}
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	shared.n++
	name := fmt.Sprintf("t%d_%d", os.Getpid(), shared.n)
	if err := CreateDB(shared.s.DSN("postgres"), name); err != nil {
		tb.Fatal(err)
	}
	return shared.s.DSN(name)
}

// Shutdown stops the shared server of NewDB, if one was started.
func Shutdown() {
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.Close()
		shared.s = nil
	}
}
