package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dtx-dev/dtx/internal/freeport"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/server"
	builtin "github.com/dtx-dev/dtx/services"
	"github.com/dtx-dev/dtx/twopc"
)

// GRPCConfig is one benchmark point over gRPC: the coordinator and the
// three services each run as their own `dtx serve` process on free
// loopback ports, with their data directories (fsync on) under Dir, and
// the clients are the client library's, in this process.
type GRPCConfig struct {
	Config
	// Binary is the dtx executable that runs `dtx serve`.
	Binary string
	// Unary makes the clients use one unary Submit call per transaction
	// instead of the shared SubmitStream streams.
	Unary bool
	// Streams is the client's stream pool size (0: the client's default).
	Streams int
	// ProfilePrefix, if set, makes every process write a CPU profile of its
	// whole life to ProfilePrefix.NAME (e.g. cpu.pprof.coordinator).
	ProfilePrefix string
	// TLS runs every process with mutual TLS and authorization (throw-away
	// certificates made in the benchmark's directory); the clients present
	// a client certificate, the scrapes an admin one.
	TLS bool
	// ServeFlags are extra flags for every `dtx serve`.
	ServeFlags []string
	// OnStart, if set, is called with the pids of the processes once they
	// are ready (tests use it).
	OnStart func(pids map[string]int)
	// Coordinators is 1 (the single coordinator) or the number of replicas
	// of a replicated coordinator (processes coordinator-1..N, one raft
	// group; the clients and services know every replica).
	Coordinators int
}

// components, in start order: the services first.
var components = []string{"inventory", "payment", "order", twopc.CoordinatorID}

// RunGRPC runs one benchmark point on four fresh processes and stops them
// all before it returns (on error and on ctx's end too). CPU time is the
// sum over the four processes (from /proc/PID/stat) and this one; fsyncs,
// messages and allocations are read from every process's /metrics and
// /v1/net before and after the measured run, plus this process's own
// allocations.
func RunGRPC(ctx context.Context, cfg GRPCConfig) (res Result, err error) {
	if cfg.Concurrency < 1 || cfg.HotKeys < 1 || cfg.Duration <= 0 {
		return Result{}, errors.New("bench: need concurrency >= 1, hot keys >= 1, duration > 0")
	}
	if cfg.NetJitter > 0 {
		return Result{}, errors.New("bench: --net-jitter is for the in-process transport only")
	}
	if cfg.Binary == "" {
		return Result{}, errors.New("bench: GRPCConfig.Binary (the dtx executable) is required")
	}
	if _, err := cfg.services(); err != nil {
		return Result{}, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "dtx-bench-grpc-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	wj, err := json.Marshal(hotWorld(cfg.HotKeys))
	if err != nil {
		return Result{}, err
	}
	worldFile := filepath.Join(dir, "world.json")
	if err := os.WriteFile(worldFile, wj, 0o644); err != nil {
		return Result{}, err
	}
	cl, err := startProcs(ctx, dir, worldFile, cfg)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if serr := cl.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if cfg.OnStart != nil {
		pids := map[string]int{}
		for _, p := range cl.procs {
			pids[p.name] = p.cmd.Process.Pid
		}
		cfg.OnStart(pids)
	}

	ccfg := client.Config{Addr: cl.coordAddrs, Unary: cfg.Unary, Streams: cfg.Streams,
		CallTimeout: 30 * time.Second, RetryFor: time.Minute}
	if cl.certs != nil {
		if ccfg.TLS, err = clientTLS(cl.certs[benchClient], auth.Coordinator); err != nil {
			return Result{}, err
		}
	}
	c, err := client.Dial(ccfg)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	submit := c.Submit // fewer participants: the coordinator runs with --participants
	// Warm up: connections, streams, first segment files.
	warm := cfg.Config
	warm.Duration = min(cfg.Duration/5, time.Second)
	if _, err := drive(ctx, warm, "w", submit); err != nil {
		return Result{}, fmt.Errorf("bench: warm-up: %w", err)
	}

	var ms0, ms1 runtime.MemStats
	before, err := cl.sample(ctx)
	if err != nil {
		return Result{}, err
	}
	runtime.ReadMemStats(&ms0)
	self0 := cpuTime()
	ld, err := drive(ctx, cfg.Config, "b", submit)
	if err != nil {
		return Result{}, err
	}
	self := cpuTime() - self0
	runtime.ReadMemStats(&ms1)
	after, err := cl.sample(ctx)
	if err != nil {
		return Result{}, err
	}
	res = ld.result(cfg.Config)
	if total := res.Committed + res.Aborted; total > 0 {
		t := float64(total)
		res.CPUPerTx = (self + after.cpu - before.cpu) / time.Duration(total)
		res.AllocsPerTx = (float64(ms1.Mallocs-ms0.Mallocs) + after.mallocs - before.mallocs) / t
		res.FsyncsPerTx = (after.syncs - before.syncs) / t
		res.MsgsPerTx = float64(after.msgs-before.msgs) / t
	}
	return res, nil
}

// procs are the four running processes.
type procs struct {
	procs []*proc
	// coordAddrs is the coordinator's gRPC address, or its replicas',
	// comma-separated.
	coordAddrs string
	grpc       map[string]string
	http       map[string]string
	web        *client.HTTP // how to reach the HTTP endpoints (admin)
	certs      map[string]*server.TLSFiles
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done
}

// freePorts returns n distinct free ports on 127.0.0.1 (freeport: below the
// ephemeral range, so that no outgoing connection takes one before the
// process that is given it listens; another program still may, and then
// that process fails to start and says so).
func freePorts(n int) ([]string, error) {
	addrs, err := freeport.Addrs(n)
	if err != nil {
		return nil, fmt.Errorf("bench: picking a free port: %w", err)
	}
	return addrs, nil
}

// startProcs starts `dtx serve` for every component and waits until each
// is ready. On error every process started is stopped.
func startProcs(ctx context.Context, dir, worldFile string, cfg GRPCConfig) (*procs, error) {
	names := components
	replicas := max(cfg.Coordinators, 1)
	var replicaSpec []string
	if replicas > 1 {
		names = slices.Clone(components[:len(components)-1])
		for i := 1; i <= replicas; i++ {
			names = append(names, fmt.Sprintf("%s-%d", twopc.CoordinatorID, i))
		}
	}
	addrs, err := freePorts(2 * len(names))
	if err != nil {
		return nil, err
	}
	ps := &procs{grpc: map[string]string{}, http: map[string]string{}}
	var coordList []string
	for i, n := range names {
		ps.grpc[n], ps.http[n] = addrs[2*i], addrs[2*i+1]
		if strings.HasPrefix(n, twopc.CoordinatorID) {
			coordList = append(coordList, ps.grpc[n])
			if replicas > 1 {
				replicaSpec = append(replicaSpec, fmt.Sprintf("%d=%s", len(coordList), ps.grpc[n]))
			}
		}
	}
	ps.coordAddrs = strings.Join(coordList, ",")
	if cfg.TLS {
		ps.certs, err = server.WriteCerts(filepath.Join(dir, "certs"), append([]string{benchClient, benchAdmin}, components...), 24*time.Hour)
		if err != nil {
			return nil, err
		}
		admin, err := clientTLS(ps.certs[benchAdmin], auth.Identity{})
		if err != nil {
			return nil, err
		}
		ps.web = &client.HTTP{TLS: admin}
	}
	services, err := cfg.services()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		isCoord := strings.HasPrefix(name, twopc.CoordinatorID)
		component := name
		if isCoord {
			component = twopc.CoordinatorID
		}
		args := []string{"serve", component, "--listen", ps.grpc[name], "--http", ps.http[name],
			"--data-dir", filepath.Join(dir, name), "--deadlock", cfg.Deadlock.String(),
			"--grace", "5s", "--log-level", "warn"}
		if isCoord {
			for _, p := range components[:len(components)-1] {
				args = append(args, "--peer", p+"="+ps.grpc[p])
			}
			if replicas > 1 {
				id := strings.TrimPrefix(name, twopc.CoordinatorID+"-")
				args = append(args, "--replica-id", id, "--replicas", strings.Join(replicaSpec, ","))
			}
		} else {
			args = append(args, "--peer", twopc.CoordinatorID+"="+ps.coordAddrs)
			args = append(args, "--world", worldFile)
		}
		if cfg.LockTimeout > 0 {
			args = append(args, "--lock-timeout", cfg.LockTimeout.String())
		}
		if cfg.PrepareTimeout > 0 {
			args = append(args, "--prepare-timeout", cfg.PrepareTimeout.String())
		}
		if cfg.MaxAttempts > 0 && isCoord {
			args = append(args, "--max-attempts", strconv.Itoa(cfg.MaxAttempts))
		}
		if isCoord && len(services) < len(builtin.IDs()) {
			args = append(args, "--participants", strings.Join(services, ","))
		}
		if f := ps.certs[component]; f != nil {
			args = append(args, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA)
		}
		if cfg.ProfilePrefix != "" {
			args = append(args, "--cpuprofile", cfg.ProfilePrefix+"."+name)
		}
		if tc := cfg.traceConfig(filepath.Join(dir, "trace-"+name+".json")); tc.On() {
			args = append(args, "--trace", tc.Exporter, "--trace-sample", strconv.FormatFloat(tc.Sample, 'g', -1, 64))
			if tc.Endpoint != "" {
				args = append(args, "--trace-endpoint", tc.Endpoint)
			}
		}
		args = append(args, cfg.ServeFlags...)
		p, err := startProc(cfg.Binary, name, filepath.Join(dir, name+".log"), args)
		if err != nil {
			ps.stop()
			return nil, err
		}
		ps.procs = append(ps.procs, p)
		if isCoord && replicas > 1 {
			continue // the replicas come up together: waited for below
		}
		if err := client.WaitReady(ctx, ps.web, ps.http[name], 30*time.Second, p.done); err != nil {
			ps.stop()
			return nil, fmt.Errorf("bench: %s did not come up: %w\n%s", name, err, tail(p.log, 20))
		}
	}
	if replicas > 1 {
		if err := ps.waitLeader(ctx, 30*time.Second); err != nil {
			ps.stop()
			return nil, err
		}
	}
	return ps, nil
}

// waitLeader waits until a coordinator replica serves as the leader.
func (ps *procs) waitLeader(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, p := range ps.procs {
			if !strings.HasPrefix(p.name, twopc.CoordinatorID+"-") {
				continue
			}
			var st struct {
				Replica *struct {
					Serving bool `json:"serving"`
				} `json:"replica"`
			}
			if err := ps.web.Get(ctx, ps.http[p.name], "/v1/status", &st); err == nil && st.Replica != nil && st.Replica.Serving {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: no coordinator replica leads after %v", d)
}

func startProc(bin, name, logFile string, args []string) (*proc, error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop drains every process with SIGTERM (the coordinator first) and kills
// what has not exited after 15s. It returns an error if a process had
// already exited on its own or did not exit cleanly.
func (ps *procs) stop() error {
	var errs []error
	for i := len(ps.procs) - 1; i >= 0; i-- {
		p := ps.procs[i]
		select {
		case <-p.done:
			errs = append(errs, fmt.Errorf("bench: %s exited during the run: %v\n%s", p.name, p.err, tail(p.log, 20)))
			continue
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(15 * time.Second)
	for _, p := range ps.procs {
		select {
		case <-p.done:
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("bench: %s did not stop within 15s of SIGTERM; killed", p.name))
		}
	}
	return errors.Join(errs...)
}

// sample is the processes' counters at one moment.
type sample struct {
	cpu     time.Duration // user+system time of the four processes
	syncs   float64       // fdatasync calls (dtx_wal_syncs_total)
	mallocs float64       // heap allocations (go_memstats_mallocs_total)
	msgs    uint64        // protocol messages sent by the transports
}

func (ps *procs) sample(ctx context.Context) (sample, error) {
	var s sample
	for _, p := range ps.procs {
		cpu, err := procCPU(p.cmd.Process.Pid)
		if err != nil {
			return s, err
		}
		s.cpu += cpu
		m, err := scrape(ctx, ps.web, ps.http[p.name], "dtx_wal_syncs_total", "go_memstats_mallocs_total")
		if err != nil {
			return s, fmt.Errorf("bench: %s: %w", p.name, err)
		}
		s.syncs += m["dtx_wal_syncs_total"]
		s.mallocs += m["go_memstats_mallocs_total"]
		var net struct{ Sent, Local uint64 }
		if err := ps.web.Get(ctx, ps.http[p.name], "/v1/net", &net); err != nil {
			return s, fmt.Errorf("bench: %s: %w", p.name, err)
		}
		s.msgs += net.Sent + net.Local
	}
	return s, nil
}

// procCPU reads the user+system time of a process from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 { // fields 3..15
		return 0, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// scrape reads the named counters from a process's Prometheus /metrics.
func scrape(ctx context.Context, web *client.HTTP, addr string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, web.URL(addr, "/metrics"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := web.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil {
					return nil, fmt.Errorf("/metrics %s: %w", n, err)
				}
				out[n] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("/metrics has no %s", n)
		}
	}
	return out, nil
}

// The identities of the benchmark's own certificates.
const (
	benchClient = "client/bench"
	benchAdmin  = "admin/bench"
)

// clientTLS loads a client's TLS configuration; with want set, it accepts
// only a server of that identity.
func clientTLS(f *server.TLSFiles, want auth.Identity) (*tls.Config, error) {
	_, cli, err := f.Load()
	if err != nil {
		return nil, err
	}
	if want.Role != 0 {
		cli = server.ExpectServer(cli, want)
	}
	return cli, nil
}

// tail returns the last n lines of a file (a process's log, for errors).
func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
