package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

func genCmd() *cobra.Command {
	var (
		count         int
		seed          int64
		prefix, world string
		makeWorld     string
		items, buyers int
		clean         bool
		skew          float64
		multiItem     float64
		maxItems      int
	)
	cmd := &cobra.Command{
		Use:   "gen --count N [--world FILE | --make-world FILE --items N --buyers N]",
		Short: "Write generated purchase requests (JSON Lines) to stdout, for tests and benchmarks",
		Long: `Gen writes N requests for a world: by default the built-in example world,
or --world FILE, or a new world it writes to --make-world FILE with --items
items and --buyers buyers, stocked and funded so that clean purchases commit.
By default about 6% of the lines are problems (unknown items, no stock, no
money, bad cards, malformed lines, duplicates); --clean turns them off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 0 || count > 100_000_000 {
				return usagef("--count %d: must be between 0 and 100000000", count)
			}
			w := purchase.ExampleWorld()
			switch {
			case world != "" && makeWorld != "":
				return usagef("--world and --make-world exclude each other")
			case world != "":
				data, err := os.ReadFile(world)
				if err != nil {
					return usagef("--world: %v", err)
				}
				if w, err = purchase.ParseWorld(data); err != nil {
					return usagef("--world %s: %v", world, err)
				}
			case makeWorld != "":
				if items < 1 || buyers < 1 || items > 1_000_000 || buyers > 1_000_000 {
					return usagef("--items and --buyers must be between 1 and 1000000")
				}
				w = bigWorld(items, buyers, count)
				data, err := w.MarshalJSON()
				if err != nil {
					return err
				}
				if err := os.WriteFile(makeWorld, append(data, '\n'), 0o644); err != nil {
					return err
				}
			}
			opts := purchase.MixedGenOptions()
			if clean {
				opts = purchase.GenOptions{}
			}
			opts.TxPrefix = prefix
			opts.Skew = skew
			opts.MultiItem = multiItem
			opts.MaxItems = maxItems
			out := bufio.NewWriterSize(os.Stdout, 1<<16)
			if err := purchase.GenerateRequests(out, count, seed, w, opts); err != nil {
				return usagef("%v", err)
			}
			return out.Flush()
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&count, "count", 100, "number of requests")
	fl.Int64Var(&seed, "seed", 1, "seed; the same flags give the same output")
	fl.StringVar(&prefix, "prefix", "t", "transaction_id prefix")
	fl.StringVar(&world, "world", "", "world file to generate requests for")
	fl.StringVar(&makeWorld, "make-world", "", "write a new world to this file and generate requests for it")
	fl.IntVar(&items, "items", 100, "items in a --make-world world")
	fl.IntVar(&buyers, "buyers", 1000, "buyers in a --make-world world")
	fl.BoolVar(&clean, "clean", false, "only clean purchases (no problem lines)")
	fl.Float64Var(&skew, "skew", 0, "Zipf exponent (> 1) for hot items and buyers; 0 is uniform")
	fl.Float64Var(&multiItem, "multi-item", 0, "share of clean purchases written as multi-item orders (items: [...])")
	fl.IntVar(&maxItems, "max-items", 0, "most items in a multi-item order (0: 3)")
	return cmd
}

// bigWorld returns a world with enough stock and money for n purchases.
func bigWorld(items, buyers, n int) purchase.World {
	w := purchase.World{Items: map[string]purchase.Item{}, Accounts: map[string]purchase.Account{}}
	stock := int64(10*n/items + 100)
	bal := money.Cents(int64(n/buyers+10) * 1_000_000)
	for i := range items {
		w.Items[fmt.Sprintf("item-%d", i)] = purchase.Item{Stock: stock}
	}
	for u := range buyers {
		w.Accounts[fmt.Sprintf("user-%d", u)] = purchase.Account{Balance: bal}
	}
	return w
}
