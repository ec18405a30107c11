package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/wal"
)

// TestFailpoints runs `dtx run` with DTX_FAILPOINT set to each named crash
// point; the process must kill itself there, and after `dtx recover` every
// printed outcome holds, nothing is partial and nothing is in doubt.
func TestFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	bin := buildDtx(t)
	points := []string{
		"coordinator:before-commit-durable@200",
		"coordinator:after-commit-durable@200",
		"inventory:after-prepared-durable@250",
		"payment:before-prepared-durable@250",
		"order:after-committed-durable@200",
		"*:before-committed-durable@400",
	}
	tmp := t.TempDir()
	input, world := filepath.Join(tmp, "in.jsonl"), filepath.Join(tmp, "world.json")
	if err := os.WriteFile(input, dtx(t, bin, "gen", "--count", "600", "--seed", "5", "--clean",
		"--make-world", world, "--items", "20", "--buyers", "50"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, fp := range points {
		t.Run(strings.NewReplacer(":", "_", "*", "any", "@", "_").Replace(fp), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cmd := exec.Command(bin, "run", "--input", input, "--world", world, "--data-dir", dir, "--concurrency", "8",
				"--fail-rate", "0", "--slow-rate", "0", "--crash-rate", "0")
			cmd.Env = append(os.Environ(), "DTX_FAILPOINT="+fp)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("want death by SIGKILL at %s, got %v\n%s", fp, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "failpoint") {
				t.Fatalf("stderr does not name the failpoint: %s", stderr.String())
			}
			st, n := recoverAndCheckPrinted(t, bin, dir, out)
			t.Logf("%s: %d outcomes printed before the kill, %d orders after recovery", fp, n, len(st.Order.Orders))
		})
	}
}

// TestSnapshotFailpoints kills `dtx run` inside a participant's snapshot
// or the coordinator's:
// after the temporary file is written, after it is synced, after the
// rename, before the compaction and in the middle of it (after a segment
// is removed). From outside, after each kill: every snapshot file left is
// whole (no torn file under a snapshot's name), and after `dtx recover`
// every printed outcome holds, nothing is partial or in doubt, and the
// invariants hold.
func TestSnapshotFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	bin := buildDtx(t)
	points := []string{
		"inventory:snapshot-written@3",
		"payment:snapshot-synced@3",
		"order:snapshot-renamed@3",
		"*:compact-before@2",
		"inventory:compact-mid@2",
		"coordinator:snapshot-written@2",
		"coordinator:snapshot-renamed@3",
		"coordinator:compact-before@2",
		"coordinator:compact-mid@1",
	}
	tmp := t.TempDir()
	// The services look at their log size every 100 ms, so the run must
	// last long enough on a slow machine for a third snapshot and a second
	// compaction (here: 2,000 to 12,000 purchases in); a run stops at
	// its failpoint, so the length costs nothing when the point is reached.
	input, world := filepath.Join(tmp, "in.jsonl"), filepath.Join(tmp, "world.json")
	if err := os.WriteFile(input, dtx(t, bin, "gen", "--count", "40000", "--seed", "9", "--clean",
		"--make-world", world, "--items", "50", "--buyers", "200"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, fp := range points {
		t.Run(strings.NewReplacer(":", "_", "*", "any", "@", "_").Replace(fp), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cmd := exec.Command(bin, "run", "--input", input, "--world", world, "--data-dir", dir, "--concurrency", "8",
				"--fail-rate", "0", "--slow-rate", "0", "--crash-rate", "0",
				"--snapshot-every", "0", "--snapshot-log-bytes", "16384", "--wal-segment-bytes", "8192",
				"--dedup-count", "1500") // the coordinator rotates every 215 outcomes
			cmd.Env = append(os.Environ(), "DTX_FAILPOINT="+fp)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("want death by SIGKILL at %s, got %v\n%s", fp, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "failpoint") {
				t.Fatalf("stderr does not name the failpoint: %s", stderr.String())
			}
			// Every file under a snapshot's name is whole: the temporary
			// file is the only one a kill may leave half written.
			for _, svc := range []string{"inventory", "payment", "order", "coordinator"} {
				names, err := filepath.Glob(filepath.Join(dir, svc, "snap-*.snap"))
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range names {
					seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(n), "snap-"), ".snap"), 16, 64)
					if err != nil {
						t.Fatalf("%s: %v", n, err)
					}
					if _, err := wal.ReadSnapshot(wal.OSFS(), filepath.Join(dir, svc), seq); err != nil {
						t.Errorf("after the kill at %s, %s is not a whole snapshot: %v", fp, n, err)
					}
				}
			}
			st, n := recoverAndCheckPrinted(t, bin, dir, out)
			if n == 0 {
				t.Errorf("no outcome printed before the kill at %s: the snapshot came before any work", fp)
			}
			t.Logf("%s: %d outcomes printed before the kill, %d orders after recovery", fp, n, len(st.Order.Orders))
		})
	}
}

// recoverAndCheckPrinted runs dtx recover on dir, then checks from outside
// that nothing is in doubt, the state is atomic, and every outcome dtx run
// printed (out) holds: COMMITTED ones have their order, others none. It
// returns the state and how many outcomes were printed.
func recoverAndCheckPrinted(t *testing.T, bin, dir string, out []byte) (engine.State, int) {
	t.Helper()
	dtx(t, bin, "recover", "--data-dir", dir)
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
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] == "line" {
			continue
		}
		_, ok := st.Order.Orders[f[0]]
		if ok != (f[1] == "COMMITTED") {
			t.Errorf("%s printed %s, committed in state: %v", f[0], f[1], ok)
		}
		n++
	}
	return st, n
}
