package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterUp runs `dtx cluster up --coordinators 3` as a user would
// (its fixed localhost ports, mutual TLS with the certificates it makes),
// checks DIR/cluster.json, that --service-flag reaches every service and
// only them, loads the cluster with `dtx cluster load --dir`, reads it with
// `dtx cluster state --dir --json` (leader and replicas), and stops it
// with Ctrl-C: every process it started must be gone.
func TestClusterUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dtx and runs six processes")
	}
	var fixed []string
	for _, n := range []string{"inventory", "payment", "order"} {
		fixed = append(fixed, defaultAddr(n, false), defaultAddr(n, true))
	}
	for id := 1; id <= 3; id++ {
		fixed = append(fixed, replicaAddr(id, false), replicaAddr(id, true))
	}
	for _, a := range fixed {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("the fixed address %s of dtx cluster up is taken: %v", a, err)
		}
		l.Close()
	}
	bin := buildDtx(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cl")
	// A world stocked and funded for the load: the bundled example world
	// has four buyers whose money runs out within the first few purchases,
	// so whether any of them commits depends on the order they run in.
	world := filepath.Join(tmp, "world.json")
	if out, err := exec.Command(bin, "gen", "--count", "1", "--make-world", world, "--items", "20", "--buyers", "50").CombinedOutput(); err != nil {
		t.Fatalf("dtx gen --make-world: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	upLog := filepath.Join(tmp, "up.log")
	upOut, err := os.Create(upLog)
	if err != nil {
		t.Fatal(err)
	}
	defer upOut.Close()
	up := exec.CommandContext(ctx, bin, "cluster", "up", "--dir", dir, "--coordinators", "3", "--world", world,
		"--dedup-window", "90s", "--service-flag=--snapshot-every=30s", "--coordinator-flag=--log-level=warn")
	up.Stdout, up.Stderr = upOut, upOut
	up.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children too, if the test fails
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	upLogText := func() string { b, _ := os.ReadFile(upLog); return string(b) }
	defer func() {
		select {
		case <-done:
		default:
			syscall.Kill(-up.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if cf, _ := readClusterFile(dir); cf != nil {
			for _, p := range cf.Processes {
				if running(p.PID) {
					syscall.Kill(p.PID, syscall.SIGKILL)
				}
			}
		}
	}()

	// cluster.json lists every process once all are up.
	var cf *clusterFile
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if cf, err = readClusterFile(dir); err == nil && cf != nil && len(cf.Processes) == 6 {
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("dtx cluster up ended before it was up: %v\n%s", err, upLogText())
		default:
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no cluster.json with 6 processes after 60 s (%v, %+v)\n%s", err, cf, upLogText())
		}
	}
	var names []string
	for _, p := range cf.Processes {
		names = append(names, p.Name)
		if p.PID <= 0 || p.GRPC == "" || p.HTTP == "" || (p.Role != "coordinator" && p.Role != "participant") {
			t.Errorf("cluster.json: incomplete process %+v", p)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if err != nil {
			t.Fatalf("process %s (pid %d): %v", p.Name, p.PID, err)
		}
		args := strings.Split(string(cmdline), "\x00")
		if i := slices.Index(args, "--dedup-window"); i < 0 || i+1 >= len(args) || args[i+1] != "1m30s" {
			t.Errorf("%s runs without --dedup-window 1m30s: %q", p.Name, args)
		}
		svcFlag, coordFlag := slices.Contains(args, "--snapshot-every=30s"), slices.Contains(args, "--log-level=warn")
		if svcFlag != (p.Role == "participant") || coordFlag != (p.Role == "coordinator") {
			t.Errorf("%s (%s): --service-flag given: %v, --coordinator-flag given: %v", p.Name, p.Role, svcFlag, coordFlag)
		}
	}
	slices.Sort(names)
	if want := []string{"coordinator-1", "coordinator-2", "coordinator-3", "inventory", "order", "payment"}; !slices.Equal(names, want) {
		t.Fatalf("cluster.json names %v, want %v", names, want)
	}

	load := exec.CommandContext(ctx, bin, "cluster", "load", "--dir", dir, "--world", world, "--coordinator",
		strings.Join([]string{replicaAddr(1, false), replicaAddr(2, false), replicaAddr(3, false)}, ","),
		"--count", "300", "--concurrency", "8", "--progress=false")
	loadOut, err := load.CombinedOutput()
	if err != nil {
		t.Fatalf("cluster load: %v\n%s", err, loadOut)
	}

	stateOut, err := exec.CommandContext(ctx, bin, "cluster", "state", "--dir", dir, "--json").Output()
	if err != nil {
		t.Fatalf("cluster state: %v\n%s", err, stateOut)
	}
	var st struct {
		Leader   string        `json:"leader"`
		Replicas []replicaView `json:"replicas"`
		Order    struct {
			Orders map[string]json.RawMessage `json:"orders"`
		} `json:"order"`
	}
	if err := json.Unmarshal(stateOut, &st); err != nil {
		t.Fatalf("cluster state --json: %v\n%s", err, stateOut)
	}
	if !strings.HasPrefix(st.Leader, "coordinator-") {
		t.Errorf("leader %q is not a replica's name", st.Leader)
	}
	leaders := 0
	for _, r := range st.Replicas {
		if r.Term == 0 || r.Applied == 0 {
			t.Errorf("replica %+v: no term or nothing applied", r)
		}
		if r.Name == st.Leader {
			leaders++
		}
	}
	if len(st.Replicas) != 3 || leaders != 1 {
		t.Errorf("replicas %+v, leader %q", st.Replicas, st.Leader)
	}
	t.Logf("%d committed orders; cluster load printed:\n%s", len(st.Order.Orders), loadOut)
	if len(st.Order.Orders) < 150 {
		t.Errorf("%d committed orders after 300 clean purchases in a world funded for them; cluster load printed:\n%s", len(st.Order.Orders), loadOut)
	}

	// Ctrl-C stops every process.
	up.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("dtx cluster up after SIGINT: %v\n%s", err, upLogText())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("dtx cluster up did not stop within 30 s of SIGINT\n%s", upLogText())
	}
	for _, p := range cf.Processes {
		for start := time.Now(); running(p.PID); time.Sleep(50 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Errorf("%s (pid %d) still runs after the cluster stopped", p.Name, p.PID)
				syscall.Kill(p.PID, syscall.SIGKILL)
				break
			}
		}
	}
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
