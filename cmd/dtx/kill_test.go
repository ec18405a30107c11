package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/engine"
)

var (
	killTrials = flag.Int("kill-trials", 4, "SIGKILL trials in TestKillAndRecover")
	killSeed   = flag.Uint64("kill-seed", 0, "seed of TestKillAndRecover (0: from the clock)")
)

// buildDtx builds the binary once per test binary run.
func buildDtx(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dtx")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func dtx(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dtx %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestKillAndRecover runs `dtx run` as a child process, kills it with
// SIGKILL at a random moment, recovers the data directory with
// `dtx recover`, and checks from outside (`dtx state`) that every
// transaction printed COMMITTED survived at all three services, every
// ROLLED_BACK one left nothing, and no transaction is partial. Each trial
// goes on with the same data directory; every other one snapshots as
// often as it can, so that kills land in snapshots and compactions too.
func TestKillAndRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	seed := *killSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d (replay: go test ./cmd/dtx -run TestKillAndRecover -kill-seed %d)", seed, seed)
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 3))
	bin := buildDtx(t)
	dir := filepath.Join(t.TempDir(), "data")
	printed := map[string]string{} // tx -> COMMITTED / ROLLED_BACK, across trials
	for trial := range *killTrials {
		input := filepath.Join(t.TempDir(), "in.jsonl")
		gen := dtx(t, bin, "gen", "--count", "3000", "--seed", fmt.Sprint(seed+uint64(trial)), "--prefix", fmt.Sprintf("k%d-", trial))
		if err := os.WriteFile(input, gen, 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"run", "--input", input, "--data-dir", dir, "--concurrency", "32",
			"--seed", fmt.Sprint(seed + uint64(trial)), "--crash-rate", "0.005", "--fail-rate", "0.02",
			"--wal-segment-bytes", "32768"}
		if trial%2 == 1 {
			// Every component, the coordinator too, snapshots every
			// 16 KiB of records (as often as its 100 ms check allows)
			// and compacts its log: kills can land in a snapshot or a
			// compaction, and later trials start from snapshots.
			args = append(args, "--snapshot-every", "0", "--snapshot-log-bytes", "16384")
		}
		cmd := exec.Command(bin, args...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 50 + rng.IntN(1500) // output lines
		sc := bufio.NewScanner(stdout)
		lines := 0
		killed := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] != "line" {
				if prev, ok := printed[f[0]]; ok && prev != f[1] {
					t.Errorf("%s printed %s and %s", f[0], prev, f[1])
				}
				printed[f[0]] = f[1]
			}
			lines++
			if lines == killAfter {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("trial %d: run failed before the kill: %v\n%s", trial, err, stderr.String())
		}
		t.Logf("trial %d: killed after %d lines (%d outcomes printed so far)", trial, lines, len(printed))

		// Every other trial recovers without dtx recover's own state
		// check: the check from outside below is the same either way.
		out := dtx(t, bin, "recover", "--data-dir", dir, fmt.Sprintf("--check=%v", trial%2 == 0))
		if !bytes.Contains(out, []byte("recovered: nothing in doubt")) {
			t.Fatalf("trial %d: dtx recover printed no recovery:\n%s", trial, out)
		}
		var st engine.State
		if err := json.Unmarshal(dtx(t, bin, "state", "--data-dir", dir), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.InDoubt) > 0 {
			t.Fatalf("in doubt after recover: %v", st.InDoubt)
		}
		for _, err := range engine.CheckAtomic(&st) {
			t.Error(err)
		}
		for tx, status := range printed {
			_, o := st.Order.Orders[tx]
			_, r := st.Inventory.Reservations[tx]
			_, c := st.Payment.Charges[tx]
			committed := status == "COMMITTED"
			if o != committed || r != committed || c != committed {
				t.Errorf("%s printed %s but order=%v reservation=%v charge=%v", tx, status, o, r, c)
			}
		}
		if t.Failed() {
			return
		}
	}
}
