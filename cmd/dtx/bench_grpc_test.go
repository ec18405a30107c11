package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/bench"
)

// serversUnder returns the pids of the running `dtx serve` processes whose
// command line names a path under dir.
func serversUnder(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z")) {
			continue // a zombie has exited; its parent has not reaped it yet
		}
		if bytes.Contains(cmd, []byte("serve\x00")) && bytes.Contains(cmd, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoServers(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		pids := serversUnder(t, dir)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("server processes %v still running %v after the benchmark ended", pids, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBenchGRPC runs `dtx bench --transport grpc` for a moment: four server
// processes, transactions committed through the client library, every
// column measured, and no process left behind.
func TestBenchGRPC(t *testing.T) {
	bin := buildDtx(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "bench", "--transport", "grpc", "--concurrency", "4", "--duration", "700ms",
		"--hot-keys", "100", "--dir", dir, "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dtx bench: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Results []bench.Result `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Results) != 1 {
		t.Fatalf("%d results, want 1", len(rep.Results))
	}
	r := rep.Results[0]
	t.Logf("%+v", r)
	if r.Committed == 0 || r.TxPerSec <= 0 || r.P50 <= 0 {
		t.Errorf("nothing committed: %+v", r)
	}
	if r.CPUPerTx <= 0 || r.FsyncsPerTx <= 0 || r.MsgsPerTx < 6 || r.AllocsPerTx <= 0 {
		t.Errorf("a column was not measured: cpu/tx %v fsync/tx %v msgs/tx %v allocs/tx %v", r.CPUPerTx, r.FsyncsPerTx, r.MsgsPerTx, r.AllocsPerTx)
	}
	waitNoServers(t, dir, 2*time.Second)
	if ents, _ := os.ReadDir(dir); len(ents) > 1 { // the floor's file may stay
		t.Errorf("data directories left in %s: %v", dir, ents)
	}
}

// TestBenchGRPCStopsServers interrupts (SIGINT) and then kills (SIGKILL)
// a running `dtx bench --transport grpc`: either way its server processes
// are gone soon after.
func TestBenchGRPCStopsServers(t *testing.T) {
	bin := buildDtx(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(bin, "bench", "--transport", "grpc", "--concurrency", "2", "--duration", "60s",
				"--hot-keys", "100", "--dir", dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.Now().Add(30 * time.Second)
			for len(serversUnder(t, dir)) < 4 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("the four servers did not start\n%s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // into the run
			cmd.Process.Signal(sig)
			select {
			case err := <-exited:
				t.Logf("bench after %v: %v %s", sig, err, strings.TrimSpace(stderr.String()))
			case <-time.After(25 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("bench did not exit within 25s of %v", sig)
			}
			waitNoServers(t, dir, 5*time.Second)
		})
	}
}
