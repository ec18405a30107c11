package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

func logCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Inspect the write-ahead logs of a data directory",
	}
	var dir, component, tx string
	dump := &cobra.Command{
		Use:   "dump --data-dir DIR [--component NAME] [--tx ID]",
		Short: "Print every record of the logs, one a line (read-only: nothing is repaired)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			comps := append([]string{twopc.CoordinatorID}, engine.Services...)
			if component != "" {
				ok := false
				for _, c := range comps {
					ok = ok || c == component
				}
				if !ok {
					return usagef("--component %q: must be one of %v", component, comps)
				}
				comps = []string{component}
			}
			out := bufio.NewWriter(os.Stdout)
			defer out.Flush()
			for _, c := range comps {
				if err := dumpLog(out, filepath.Join(dir, c), c, tx); err != nil {
					return err
				}
			}
			return nil
		},
	}
	dump.Flags().StringVar(&dir, "data-dir", "dtx-data", "data directory")
	dump.Flags().StringVar(&component, "component", "", "only this log: coordinator, inventory, payment or order")
	dump.Flags().StringVar(&tx, "tx", "", "only records of this transaction id")
	cmd.AddCommand(dump)
	return cmd
}

func dumpLog(out *bufio.Writer, dir, name, tx string) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usagef("%s: no log directory (is --data-dir a dtx data directory?)", dir)
	}
	cfg := wal.DefaultConfig(dir)
	cfg.ReadOnly = true
	l, err := wal.Open(cfg)
	if err != nil {
		return fmt.Errorf("%s log: %w", name, err)
	}
	defer l.Close()
	return l.Replay(func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil {
			fmt.Fprintf(out, "%s #%d type=%d undecodable: %v\n", name, r.Seq, r.Type, err)
			return nil
		}
		if tx != "" && rec.Tx != tx {
			return nil
		}
		fmt.Fprintf(out, "%s #%d %s\n", name, r.Seq, rec)
		return nil
	})
}
