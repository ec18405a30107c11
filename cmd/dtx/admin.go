package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/twopc"
)

// adminFlags say which process to ask and as whom.
type adminFlags struct {
	node, addr, dir, tokenFile string
	yes                        bool
	tls                        tlsFlags
}

// web returns how to reach the process and its HTTP address.
func (f *adminFlags) web() (*client.HTTP, string, error) {
	addr := f.addr
	if addr == "" {
		if addr = defaultAddr(f.node, true); addr == "" {
			return nil, "", usagef("--node %q has no default address: give --http HOST:PORT", f.node)
		}
	}
	h, err := clusterWeb(f.dir, &f.tls)
	if err != nil {
		return nil, "", err
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, "", usagef("--token-file: %v", err)
		}
		if h == nil {
			h = &client.HTTP{}
		}
		h.Token = strings.TrimSpace(string(b))
	}
	return h, addr, nil
}

// call sends one admin request and prints the JSON answer, indented.
func (f *adminFlags) call(method, path string, body []byte) error {
	h, addr, err := f.web()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.URL(addr, path), bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := h.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		out.Reset()
		out.Write(b)
	}
	out.WriteByte('\n')
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

// confirm asks on the terminal before an action that changes something,
// unless --yes.
func (f *adminFlags) confirm(what string) error {
	if f.yes {
		return nil
	}
	fmt.Fprintf(os.Stderr, "%s\nType yes to go on: ", what)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return usagef("not confirmed: nothing was done")
	}
	return nil
}

func txPath(tx, what string) (string, error) {
	if err := twopc.ValidTxID(tx); err != nil {
		return "", usagef("transaction id: %v", err)
	}
	return "/v1/admin/transactions/" + url.PathEscape(tx) + "/" + what, nil
}

func adminCmd() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "The operator's admin API of a running process: transactions in flight and in doubt, timelines, retry, heuristic decisions",
		Long: `Admin asks one dtx serve process's admin API (admin role: an admin
certificate, or an admin bearer token with --token-file) and prints its JSON
answer. --dir DIR uses the admin certificate that 'dtx cluster up --dir DIR'
made; --node NAME picks the default address of that component (HTTP
8100-8103), or give --http HOST:PORT. The same API is what the coordinator's
web console (/console/) uses. See docs/SERVE.md.`,
	}
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.node, "node", twopc.CoordinatorID, "component to ask (its default local address): coordinator, inventory, payment or order")
	fl.StringVar(&f.addr, "http", "", "HTTP address of the process (overrides --node's default)")
	fl.StringVar(&f.dir, "dir", "", "the --dir of 'dtx cluster up': use its admin certificate")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding an admin bearer token")
	fl.BoolVar(&f.yes, "yes", false, "do not ask before an action that changes something")
	f.tls.add(fl)

	var limit int
	txs := &cobra.Command{
		Use: "transactions", Short: "Transactions in flight at the coordinator, oldest first (phase, age, votes, whom each waits for, who is in doubt)",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return f.call(http.MethodGet, fmt.Sprintf("/v1/admin/transactions?limit=%d", limit), nil)
		},
	}
	txs.Flags().IntVar(&limit, "limit", 100, "most transactions listed")
	timeline := &cobra.Command{
		Use: "timeline TX", Short: "One transaction's records from every component's log, merged (coordinator)",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := txPath(args[0], "timeline")
			if err != nil {
				return err
			}
			return f.call(http.MethodGet, p, nil)
		},
	}
	waits := &cobra.Command{
		Use: "waits", Short: "The coordinator's wait-for graph and its cycles", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return f.call(http.MethodGet, "/v1/admin/waits", nil) },
	}
	retry := &cobra.Command{
		Use: "retry TX", Short: "Resend now what a transaction waits for: PREPARE, COMMIT, or ABORT of an aborted one (coordinator)",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := txPath(args[0], "retry")
			if err != nil {
				return err
			}
			if err := f.confirm("Resend now what " + args[0] + " waits for?"); err != nil {
				return err
			}
			return f.call(http.MethodPost, p, nil)
		},
	}
	inDoubt := &cobra.Command{
		Use: "in-doubt", Short: "A service's branches in doubt, its heuristic decisions and mismatches (--node SERVICE)",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return f.call(http.MethodGet, "/v1/admin/in-doubt", nil) },
	}
	var outcome, note string
	force := &cobra.Command{
		Use:   "force TX --node SERVICE --outcome commit|abort --note WHY",
		Short: "Decide an in-doubt branch by hand (a heuristic decision) when its coordinator is gone for good",
		Long: `Force commits or aborts a service's in-doubt branch without its coordinator.
The decision is forced in the service's log as HEURISTIC_COMMITTED or
HEURISTIC_ABORTED, releases the branch's locks, and is reported as heuristic
for good. If the coordinator comes back and decided the other way, the
transaction is not atomic: a HEURISTIC MISMATCH, reported loudly, that you
repair by hand. Decide only what you can repair.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o := strings.ToUpper(outcome)
			if o != "COMMIT" && o != "ABORT" {
				return usagef("--outcome %q: want commit or abort", outcome)
			}
			if f.node == twopc.CoordinatorID && f.addr == "" {
				return usagef("force asks a service: give --node SERVICE or --http")
			}
			p, err := txPath(args[0], "force")
			if err != nil {
				return err
			}
			if err := f.confirm(fmt.Sprintf("%s the in-doubt branch of %s at %s by hand, without its coordinator?", o, args[0], f.node)); err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"outcome": o, "note": note})
			return f.call(http.MethodPost, p, body)
		},
	}
	force.Flags().StringVar(&outcome, "outcome", "", "commit or abort")
	force.Flags().StringVar(&note, "note", "", "why, kept in the service's log with your identity")
	cmd.AddCommand(txs, timeline, waits, retry, inDoubt, force)
	return cmd
}
