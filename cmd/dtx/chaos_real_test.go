package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/money"
)

var (
	realTrials = flag.Int("real-trials", 5, "kill-and-recover trials of TestRealKills")
	realSeed   = flag.Uint64("real-seed", 0, "seed of TestRealKills (0: from the clock)")
	realReport = flag.String("real-report", "", "append a one-line JSON summary of TestRealKills to this file")
)

// Kill modes of TestRealKills. The failpoints (kill or fail at the entry
// of the Nth fdatasync of a thread) are enabled by running dtx under strace
// with DTX_FAILPOINT naming the point; they need no hook in dtx itself.
const (
	modeKillRandom   = "kill-random"       // SIGKILL at a random moment
	modeKillAfterOut = "kill-after-output" // SIGKILL right after an outcome was printed
	modeSyncKill     = "fdatasync-kill"    // failpoint: SIGKILL on entering an fdatasync (written, not durable)
	modeSyncEIO      = "fdatasync-eio"     // failpoint: an fdatasync fails with EIO (the log must stop)
)

// failpointEnv names the failpoint of a run, for the strace wrapper.
const failpointEnv = "DTX_FAILPOINT"

// straceArgs turns DTX_FAILPOINT=fdatasync-kill:N or fdatasync-eio:N into
// strace syscall-injection arguments, or nil.
func straceArgs(fp string) []string {
	kind, n, ok := strings.Cut(fp, ":")
	if !ok {
		return nil
	}
	var inject string
	switch kind {
	case modeSyncKill:
		inject = "fdatasync:signal=SIGKILL:when=" + n
	case modeSyncEIO:
		inject = "fdatasync:error=EIO:when=" + n
	default:
		return nil
	}
	return []string{"-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e", "inject=" + inject}
}

// haveStrace reports whether strace can inject faults here.
func haveStrace(bin string) bool {
	if _, err := exec.LookPath("strace"); err != nil {
		return false
	}
	cmd := exec.Command("strace", append(straceArgs(modeSyncKill+":1"), bin, "help")...)
	return cmd.Run() == nil
}

// command returns the command for dtx args, under strace when fp names a
// failpoint.
func command(ctx context.Context, bin, fp string, args ...string) *exec.Cmd {
	if sa := straceArgs(fp); sa != nil {
		cmd := exec.CommandContext(ctx, "strace", append(append(sa, bin), args...)...)
		cmd.Env = append(os.Environ(), failpointEnv+"="+fp)
		return cmd
	}
	return exec.CommandContext(ctx, bin, args...)
}

type realStats struct {
	Trials          int            `json:"trials"`
	Modes           map[string]int `json:"modes"`
	RecoveryKills   int            `json:"recovery_kills"`
	KilledMidRun    int            `json:"killed_mid_run"`
	Printed         int            `json:"outcomes_printed"`
	Committed       int            `json:"committed_printed"`
	Violations      int            `json:"violations"`
	LostCommitted   int            `json:"lost_committed"`
	RecoverP50Milli float64        `json:"restart_to_no_in_doubt_p50_ms"`
	RecoverP99Milli float64        `json:"restart_to_no_in_doubt_p99_ms"`
	RecoverMaxMilli float64        `json:"restart_to_no_in_doubt_max_ms"`
	RecoverMilli    []float64      `json:"restart_to_no_in_doubt_ms"`
}

// TestRealKills runs `dtx run` as a child process under load, kills it
// with SIGKILL at random moments and at fdatasync failpoints (or fails an
// fdatasync with EIO), sometimes kills the recovery too, restarts on the
// same data directory with `dtx recover`, and checks from outside (`dtx
// state` and the printed outcomes) that: nothing is in doubt, every
// transaction is committed at all three services or none, every printed
// COMMITTED is there and every ROLLED_BACK is not, a resubmitted id gets
// its first outcome back, and stock and money add up. It reports the time
// from restart to no transaction in doubt (p50/p99).
func TestRealKills(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	seed := *realSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d (replay: go test ./cmd/dtx -run TestRealKills -real-seed %d -real-trials %d)", seed, seed, *realTrials)
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 11))
	bin := buildDtx(t)
	strace := haveStrace(bin)
	if !strace {
		t.Log("strace cannot inject faults here: fdatasync failpoints are skipped")
	}
	modes := []string{modeKillRandom, modeKillAfterOut}
	if strace {
		modes = append(modes, modeSyncKill, modeSyncKill, modeSyncEIO)
	}
	tmp := t.TempDir()
	world := filepath.Join(tmp, "world.json")
	if out, err := exec.Command(bin, "gen", "--make-world", world, "--items", "6", "--buyers", "12", "--count", "1").CombinedOutput(); err != nil {
		t.Fatalf("gen world: %v\n%s", err, out)
	}
	stats := realStats{Modes: map[string]int{}}
	var recoverTimes []time.Duration
	var dir string
	var printed map[string]string // tx -> first printed status, per data dir
	var prevLines []string        // request lines run on this data dir
	for trial := range *realTrials {
		if trial%25 == 0 { // a fresh data directory now and then: stock and money run out
			dir = filepath.Join(tmp, fmt.Sprintf("data%d", trial))
			printed = map[string]string{}
			prevLines = nil
		}
		mode := modes[rng.IntN(len(modes))]
		stats.Modes[mode]++
		gen := dtx(t, bin, "gen", "--world", world, "--count", fmt.Sprint(200+rng.IntN(800)), "--seed", fmt.Sprint(seed+uint64(trial)),
			"--prefix", fmt.Sprintf("r%d-", trial), "--skew", "1.3")
		lines := strings.SplitAfter(strings.TrimSpace(string(gen)), "\n")
		// Resubmit some ids run before on this data directory.
		for range min(len(prevLines), 20) {
			lines = append(lines, prevLines[rng.IntN(len(prevLines))])
		}
		rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
		for i := range lines {
			lines[i] = strings.TrimSuffix(lines[i], "\n") + "\n"
		}
		prevLines = append(prevLines, lines...)
		input := filepath.Join(tmp, "in.jsonl")
		if err := os.WriteFile(input, []byte(strings.Join(lines, "")), 0o644); err != nil {
			t.Fatal(err)
		}

		fp := ""
		switch mode {
		case modeSyncKill, modeSyncEIO:
			fp = fmt.Sprintf("%s:%d", mode, 1+rng.IntN(40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := command(ctx, bin, fp, "run", "--input", input, "--data-dir", dir, "--world", world, "--concurrency", fmt.Sprint(8+rng.IntN(56)),
			"--seed", fmt.Sprint(seed+uint64(trial)), "--crash-rate", "0.002", "--fail-rate", "0.02", "--progress=false")
		outs, killed, err := runAndKill(t, cmd, mode, rng)
		cancel()
		if err != nil {
			t.Fatalf("trial %d (%s %s): %v", trial, mode, fp, err)
		}
		if killed {
			stats.KilledMidRun++
		}
		for _, o := range outs {
			stats.Printed++
			if o.status == "COMMITTED" {
				stats.Committed++
			}
			if prev, ok := printed[o.tx]; ok && prev != o.status {
				t.Errorf("trial %d: %s printed %s, earlier %s", trial, o.tx, o.status, prev)
				stats.Violations++
			}
			if _, ok := printed[o.tx]; !ok {
				printed[o.tx] = o.status
			}
		}

		if _, err := os.Stat(filepath.Join(dir, "world.json")); err != nil {
			// Killed before the data directory existed: nothing ran.
			if len(outs) > 0 {
				t.Fatalf("trial %d: %d outcomes printed, but %s has no world.json", trial, len(outs), dir)
			}
			stats.Trials++
			continue
		}

		// A crash during recovery itself, now and then.
		if rng.IntN(4) == 0 {
			stats.RecoveryKills++
			rfp := ""
			if strace && rng.IntN(2) == 0 {
				rfp = fmt.Sprintf("%s:%d", modeSyncKill, 1+rng.IntN(6))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			rc := command(ctx, bin, rfp, "recover", "--data-dir", dir)
			if rfp == "" {
				rc.Start()
				time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
				rc.Process.Signal(syscall.SIGKILL)
				rc.Wait()
			} else {
				rc.Run()
			}
			cancel()
		}

		// Restart on the same data directory; time until nothing is in
		// doubt (recover prints its first line once everything is resolved).
		d, err := timedRecover(bin, dir)
		if err != nil {
			t.Fatalf("trial %d (%s %s): recover: %v", trial, mode, fp, err)
		}
		recoverTimes = append(recoverTimes, d)

		var st engine.State
		if err := json.Unmarshal(dtx(t, bin, "state", "--data-dir", dir), &st); err != nil {
			t.Fatal(err)
		}
		bad := checkRealState(t, &st, printed)
		stats.Violations += bad.violations
		stats.LostCommitted += bad.lost
		stats.Trials++
		if t.Failed() {
			t.Logf("trial %d: mode %s %s", trial, mode, fp)
			break
		}
		if trial%50 == 49 {
			t.Logf("%d trials, %d outcomes printed, %d violations", trial+1, stats.Printed, stats.Violations)
		}
	}
	slices.Sort(recoverTimes)
	pct := func(p float64) float64 {
		if len(recoverTimes) == 0 {
			return 0
		}
		return float64(recoverTimes[int(p/100*float64(len(recoverTimes)-1))].Microseconds()) / 1000
	}
	stats.RecoverP50Milli, stats.RecoverP99Milli, stats.RecoverMaxMilli = pct(50), pct(99), pct(100)
	for _, d := range recoverTimes {
		stats.RecoverMilli = append(stats.RecoverMilli, float64(d.Microseconds())/1000)
	}
	js, _ := json.Marshal(stats)
	t.Logf("summary: %s", js)
	if *realReport != "" {
		f, err := os.OpenFile(*realReport, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s\n", js)
			f.Close()
		}
	}
}

type printedOutcome struct{ tx, status string }

// runAndKill runs cmd, reads its outcome lines and kills it as mode says.
// It returns the outcomes printed and whether it killed the process.
func runAndKill(t *testing.T, cmd *exec.Cmd, mode string, rng *rand.Rand) ([]printedOutcome, bool, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, false, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // strace and dtx die together
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return nil, false, err
	}
	var mu sync.Mutex
	killed := false
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		if !killed {
			killed = true
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	if mode == modeKillRandom {
		timer := time.AfterFunc(time.Duration(rng.IntN(800))*time.Millisecond, kill)
		defer timer.Stop()
	}
	after := -1
	if mode == modeKillAfterOut {
		after = 1 + rng.IntN(300)
	}
	var outs []printedOutcome
	sc := bufio.NewScanner(stdout)
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] != "line" {
			outs = append(outs, printedOutcome{f[0], f[1]})
			n++
			if n == after {
				kill()
			}
		}
	}
	err = cmd.Wait()
	mu.Lock()
	k := killed
	mu.Unlock()
	switch {
	case k:
	case mode == modeSyncKill || mode == modeSyncEIO:
		// Killed by the failpoint, or a failed log stopped it (EIO), or the
		// failpoint was never reached: all fine.
	case err != nil:
		return outs, k, fmt.Errorf("run failed without a kill: %v\n%s", err, stderr.String())
	}
	return outs, k, nil
}

// timedRecover runs `dtx recover` and returns the time from its start to
// its first line of output, printed once nothing is in doubt.
func timedRecover(bin, dir string) (time.Duration, error) {
	cmd := exec.Command(bin, "recover", "--data-dir", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(stdout)
	var d time.Duration
	for sc.Scan() {
		if d == 0 {
			d = time.Since(start)
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%v\n%s", err, stderr.String())
	}
	return d, nil
}

type realBad struct{ violations, lost int }

// checkRealState checks the invariants on a recovered data directory.
func checkRealState(t *testing.T, st *engine.State, printed map[string]string) realBad {
	t.Helper()
	var bad realBad
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		bad.violations++
	}
	if len(st.InDoubt) > 0 {
		fail("in doubt after recover: %v", st.InDoubt)
	}
	for _, err := range engine.CheckAtomic(st) {
		fail("%v", err)
	}
	for tx, status := range printed {
		_, o := st.Order.Orders[tx]
		_, r := st.Inventory.Reservations[tx]
		_, c := st.Payment.Charges[tx]
		committed := status == "COMMITTED"
		if o != committed || r != committed || c != committed {
			fail("%s printed %s but order=%v reservation=%v charge=%v", tx, status, o, r, c)
			if committed {
				bad.lost++
			}
		}
	}
	sold := map[string]int64{}
	spent := map[string]money.Cents{}
	for _, o := range st.Order.Orders {
		for _, it := range o.Items {
			sold[it.ItemID] += it.Quantity
		}
		spent[o.UserID] += o.Amount
	}
	for id, it := range st.Inventory.Items {
		if it.Available < 0 || it.Reserved != 0 || it.Sold < 0 || it.Available+it.Reserved+it.Sold != it.Stock || it.Sold != sold[id] {
			fail("item %s does not add up: %+v, orders sold %d", id, it, sold[id])
		}
	}
	for id, a := range st.Payment.Accounts {
		if a.Balance < 0 || a.Held != 0 || a.Captured < 0 || a.Balance+a.Held+a.Captured != a.Initial || a.Captured != spent[id] {
			fail("account %s does not add up: %+v, orders spent %s", id, a, spent[id])
		}
	}
	return bad
}
