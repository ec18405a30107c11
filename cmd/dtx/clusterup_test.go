package main

import (
	"bytes"
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
	for _, a := range []string{replicaAddr(1, false), replicaAddr(1, true), defaultAddr("inventory", false), replicaAddr(3, true)} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("the fixed address %s of dtx cluster up is taken: %v", a, err)
		}
		l.Close()
	}
	bin := buildDtx(t)
	dir := filepath.Join(t.TempDir(), "cl")
	world, err := filepath.Abs("../../examples/world.json")
	if err != nil {
		t.Fatal(err)
	}
	up := exec.Command(bin, "cluster", "up", "--dir", dir, "--coordinators", "3", "--world", world,
		"--service-flag=--dedup-window=1m", "--coordinator-flag=--dedup-window=2m")
	var upOut bytes.Buffer
	up.Stdout, up.Stderr = &upOut, &upOut
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			up.Process.Signal(syscall.SIGINT)
			up.Wait()
		}
	}()

	// cluster.json lists every process once all are up.
	var cf *clusterFile
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if cf, err = readClusterFile(dir); err == nil && cf != nil && len(cf.Processes) == 6 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no cluster.json with 6 processes after 60 s (%v, %+v)\n%s", err, cf, upOut.String())
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
		want := "--dedup-window=1m"
		if p.Role == "coordinator" {
			want = "--dedup-window=2m"
		}
		if !slices.Contains(args, want) {
			t.Errorf("%s runs without %s: %q", p.Name, want, args)
		}
	}
	slices.Sort(names)
	if want := []string{"coordinator-1", "coordinator-2", "coordinator-3", "inventory", "order", "payment"}; !slices.Equal(names, want) {
		t.Fatalf("cluster.json names %v, want %v", names, want)
	}

	load := exec.Command(bin, "cluster", "load", "--dir", dir, "--world", world, "--coordinator",
		strings.Join([]string{replicaAddr(1, false), replicaAddr(2, false), replicaAddr(3, false)}, ","),
		"--count", "300", "--concurrency", "8", "--progress=false")
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("cluster load: %v\n%s", err, out)
	}

	stateOut, err := exec.Command(bin, "cluster", "state", "--dir", dir, "--json").Output()
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
	if len(st.Order.Orders) == 0 {
		t.Errorf("no committed order after 300 purchases")
	}

	// Ctrl-C stops every process.
	up.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	select {
	case <-done:
		stopped = true
	case <-time.After(30 * time.Second):
		t.Fatalf("dtx cluster up did not stop within 30 s of SIGINT\n%s", upOut.String())
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
