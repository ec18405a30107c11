// Command dtx is the dtx distributed transaction manager: one binary with
// subcommands. Run `dtx help` for the list.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	root := &cobra.Command{
		Use:           "dtx",
		Short:         "dtx makes a transaction across services atomic (two-phase commit, presumed abort)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), recoverCmd(), stateCmd(), logCmd(), genCmd(), benchCmd(), chaosCmd(), serveCmd(), clusterCmd(), adminCmd())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "dtx:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
