package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/failpoint"
	"github.com/dtx-dev/dtx/services/pgstore"
	"github.com/dtx-dev/dtx/twopc"
)

// openExisting opens a data directory that must exist, recovers it, and
// waits until nothing is unfinished.
func openExisting(ctx context.Context, dir, store string, wait time.Duration) (*engine.Engine, error) {
	if st, err := os.Stat(filepath.Join(dir, "world.json")); err != nil || st.IsDir() {
		return nil, usagef("--data-dir %s: not a dtx data directory (no world.json); `dtx run` creates one", dir)
	}
	if err := checkStore(store); err != nil {
		return nil, err
	}
	cfg := engine.DefaultConfig(dir)
	cfg.Store = store
	fp, err := failpoint.FromEnv()
	if err != nil {
		return nil, usagef("%s: %v", failpoint.EnvVar, err)
	}
	cfg.Failpoints = fp
	eng, err := engine.Open(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := eng.WaitQuiet(ctx); err != nil {
		st, _ := eng.State(context.Background())
		eng.Close()
		return nil, fmt.Errorf("recovery did not finish within %v (in doubt: %v): %w", wait, st.InDoubt, err)
	}
	return eng, nil
}

// checkStore validates a --store flag.
func checkStore(store string) error {
	if store != "" && !pgstore.IsURL(store) {
		return usagef("--store %q: want a PostgreSQL URL (postgres://user@host:port/db)", store)
	}
	return nil
}

func recoverCmd() *cobra.Command {
	var dir, store string
	var wait time.Duration
	var check bool
	var diag diagFlags
	cmd := &cobra.Command{
		Use:   "recover --data-dir DIR",
		Short: "Recover a data directory: finish or roll back every unfinished transaction, report, exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stopDiag, err := diag.start("dtx recover: resident set size", nil)
			if err != nil {
				return err
			}
			defer stopDiag()
			start := time.Now()
			eng, err := openExisting(cmd.Context(), dir, store, wait)
			if err != nil {
				return err
			}
			defer eng.Close()
			ready := time.Since(start)
			// Said at once: the state and invariant check below reads every
			// committed entry and takes minutes after millions of them.
			rep := eng.Report()
			fmt.Fprintf(os.Stderr, "dtx: ready (logs opened, snapshots loaded, records replayed, nothing unfinished) in %v; opened side by side: %s\n",
				ready.Round(time.Millisecond), openedList(rep.Opened))
			if cs := rep.CoordSnapshot; cs.Loaded > 0 {
				fmt.Fprintf(os.Stderr, "dtx: coordinator: snapshot %d loaded in %v (%d retained outcomes, %d expired ids), log replayed from record %d\n",
					cs.Loaded, cs.LoadTook.Round(time.Millisecond), cs.LoadedOutcomes, cs.LoadedExpired, cs.Loaded+1)
			}
			for _, s := range rep.CoordSnapshot.Skipped {
				fmt.Fprintf(os.Stderr, "dtx: coordinator: snapshot skipped: %s\n", s)
			}
			fmt.Printf("coordinator epoch %d: %d unfinished transaction(s) found\n", rep.CoordEpoch, rep.Unfinished)
			for _, svc := range engine.Services {
				txs := rep.InDoubt[svc]
				fmt.Printf("%s: %d in doubt at start%s\n", svc, len(txs), list(txs))
			}
			for _, o := range rep.PresumedAbort {
				fmt.Printf("%s ROLLED_BACK %s\n", o.Tx, o.Reason)
			}
			if !check {
				fmt.Println("recovered: nothing in doubt (state and invariant check skipped)")
				return nil
			}
			st, err := eng.State(cmd.Context())
			if err != nil {
				return err
			}
			if err := eng.Check(cmd.Context()); err != nil {
				return fmt.Errorf("invariant check failed after recovery: %w", err)
			}
			fmt.Printf("recovered: nothing in doubt; %d committed orders; invariants hold\n", len(st.Order.Orders))
			fmt.Fprintf(os.Stderr, "dtx: state and invariant check in %v\n", (time.Since(start) - ready).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "dtx-data", "data directory")
	cmd.Flags().StringVar(&store, "store", "", "the PostgreSQL database (postgres://…) that keeps the services' state, if dtx run --store made the directory")
	cmd.Flags().DurationVar(&wait, "timeout", 60*time.Second, "longest time to wait for recovery to finish")
	cmd.Flags().BoolVar(&check, "check", true, "read the whole recovered state and check the invariants (minutes after millions of committed transactions; --check=false stops once recovery is done)")
	addDiagFlags(cmd.Flags(), &diag)
	return cmd
}

// openedList is each component's time to open, coordinator first.
func openedList(opened map[string]time.Duration) string {
	var parts []string
	for _, c := range append([]string{twopc.CoordinatorID}, engine.Services...) {
		if d, ok := opened[c]; ok {
			parts = append(parts, fmt.Sprintf("%s %v", c, d.Round(time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

func list(txs []string) string {
	if len(txs) == 0 {
		return ""
	}
	if len(txs) > 10 {
		return fmt.Sprintf(" (%s, ...)", strings.Join(txs[:10], ", "))
	}
	return " (" + strings.Join(txs, ", ") + ")"
}

func stateCmd() *cobra.Command {
	var dir, store string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "state --data-dir DIR",
		Short: "Recover a data directory and print the durable state of every service as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			eng, err := openExisting(cmd.Context(), dir, store, wait)
			if err != nil {
				return err
			}
			defer eng.Close()
			st, err := eng.State(cmd.Context())
			if err != nil {
				return err
			}
			slices.Sort(st.InDoubt)
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "dtx-data", "data directory")
	cmd.Flags().StringVar(&store, "store", "", "the PostgreSQL database (postgres://…) that keeps the services' state, if dtx run --store made the directory")
	cmd.Flags().DurationVar(&wait, "timeout", 60*time.Second, "longest time to wait for recovery to finish")
	return cmd
}
