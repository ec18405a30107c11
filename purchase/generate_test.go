package purchase

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// bigWorld has items item-0000… with a stock of 1000 and accounts user-0000…
// with a balance of 100000.00.
func bigWorld(items, users int) World {
	w := World{Items: map[string]Item{}, Accounts: map[string]Account{}}
	for i := range items {
		w.Items[fmt.Sprintf("item-%04d", i)] = Item{Stock: 1000}
	}
	for i := range users {
		w.Accounts[fmt.Sprintf("user-%04d", i)] = Account{Balance: 100000_00}
	}
	return w
}

func generate(t testing.TB, n int, seed int64, w World, opts GenOptions) []string {
	t.Helper()
	var buf bytes.Buffer
	if err := GenerateRequests(&buf, n, seed, w, opts); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		if buf.Len() != 0 {
			t.Fatalf("n = 0 wrote %q", buf.String())
		}
		return nil
	}
	if !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
		t.Fatal("output does not end with a newline")
	}
	return strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

func TestGenerateDeterministic(t *testing.T) {
	w := bigWorld(20, 20)
	opts := MixedGenOptions()
	opts.Skew = 1.3
	a := generate(t, 500, 42, w, opts)
	b := generate(t, 500, 42, w, opts)
	c := generate(t, 500, 43, w, opts)
	if !slices.Equal(a, b) {
		t.Error("the same seed gives different output")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds give the same output")
	}
	if generate(t, 0, 1, w, opts) != nil {
		t.Error("n = 0 wrote lines")
	}
}

// TestGenerateClean checks that clean purchases all decode, have distinct
// ids, and all commit, in any order.
func TestGenerateClean(t *testing.T) {
	w := bigWorld(30, 30)
	for _, opts := range []GenOptions{{}, {Skew: 2, TxPrefix: "run7-"}} {
		lines := generate(t, 3000, 1, w, opts)
		reqs := make([]Request, len(lines))
		ids := map[string]bool{}
		for i, l := range lines {
			r, err := DecodeLine([]byte(l))
			if err != nil {
				t.Fatalf("line %d: %v\n%s", i+1, err, l)
			}
			if ids[r.TxID] {
				t.Fatalf("line %d: transaction_id %q again", i+1, r.TxID)
			}
			prefix := opts.TxPrefix
			if prefix == "" {
				prefix = "t"
			}
			if want := fmt.Sprintf("%s%d", prefix, i+1); r.TxID != want {
				t.Fatalf("line %d: transaction_id %q, want %q", i+1, r.TxID, want)
			}
			ids[r.TxID] = true
			reqs[i] = r
		}
		rng := rand.New(rand.NewPCG(1, 1))
		for range 5 {
			m := newModel(w)
			for _, i := range rng.Perm(len(reqs)) {
				if o := m.apply(reqs[i]); o != committed {
					t.Fatalf("%s: %s, want it committed", reqs[i].TxID, o)
				}
			}
		}
	}
}

// TestGenerateMixed checks the shares of problems and that every outcome is
// the same whatever the order.
func TestGenerateMixed(t *testing.T) {
	const n = 20000
	opts := GenOptions{UnknownItem: 0.02, OutOfStock: 0.03, Insufficient: 0.04, BadCard: 0.05, Malformed: 0.06, Duplicate: 0.07}
	w := bigWorld(40, 40)
	lines := generate(t, n, 9, w, opts)
	var reqs []Request
	seenLine := map[string]bool{}
	counts := map[string]int{}
	for i, l := range lines {
		if seenLine[l] {
			counts["duplicate"]++
			if r, err := DecodeLine([]byte(l)); err != nil {
				t.Fatalf("line %d: a duplicate of a bad line: %v", i+1, err)
			} else {
				reqs = append(reqs, r)
			}
			continue
		}
		seenLine[l] = true
		r, err := DecodeLine([]byte(l))
		switch {
		case err == nil:
			reqs = append(reqs, r)
		case strings.HasSuffix(err.Error(), "fails the Luhn check"):
			counts["bad card"]++
		default:
			counts["malformed"]++
			if r.TxID == "" && !strings.HasPrefix(err.Error(), "invalid JSON") {
				t.Errorf("line %d: %v, and no transaction id", i+1, err)
			}
		}
	}
	var first map[string]outcome
	for run := range 3 {
		order := rand.New(rand.NewPCG(uint64(run), 0)).Perm(len(reqs))
		if run == 0 {
			slices.Sort(order)
		}
		m := newModel(w)
		for _, i := range order {
			m.apply(reqs[i])
		}
		if first == nil {
			first = m.seen
			for _, o := range m.seen {
				counts[string(o)]++
			}
			continue
		}
		for id, o := range m.seen { // the reason of a failure may change
			if (first[id] == committed) != (o == committed) {
				t.Fatalf("%s: %s in one order, %s in another", id, first[id], o)
			}
		}
	}
	check := func(name string, share float64) {
		got := float64(counts[name]) / n
		if math.Abs(got-share) > 0.01 {
			t.Errorf("%s: share %.4f, want about %.2f", name, got, share)
		}
	}
	// A purchase beyond the buyer's balance may also be beyond the stock
	// left, and the model checks the stock first.
	check(string(unknownItem), opts.UnknownItem)
	counts["out of stock or insufficient funds"] = counts[string(outOfStock)] + counts[string(insufficient)]
	check("out of stock or insufficient funds", opts.OutOfStock+opts.Insufficient)
	check("bad card", opts.BadCard)
	check("malformed", opts.Malformed)
	check("duplicate", opts.Duplicate)
	t.Logf("counts: %v", counts)
}

func TestGenerateSkew(t *testing.T) {
	w := bigWorld(100, 100)
	for id := range w.Items {
		w.Items[id] = Item{Stock: 100000}
	}
	lines := generate(t, 5000, 3, w, GenOptions{Skew: 1.5})
	perItem := map[string]int{}
	for _, l := range lines {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		perItem[r.ItemID]++
	}
	top := slices.Max(slices.Collect(func(yield func(int) bool) {
		for _, c := range perItem {
			if !yield(c) {
				return
			}
		}
	}))
	if top < 1500 {
		t.Errorf("hottest item in %d of 5000 lines, want a hot spot", top)
	}
}

// TestGenerateDryWorld checks that a world that runs out gives purchases
// that fail whatever the order, and that the clean ones still commit.
func TestGenerateDryWorld(t *testing.T) {
	w := World{
		Items:    map[string]Item{"a": {Stock: 5}, "b": {Stock: 0}, "no-such-item": {Stock: 1}},
		Accounts: map[string]Account{"u": {Balance: 300_00}, "v": {Balance: 0}},
	}
	var reqs []Request
	for i, l := range generate(t, 200, 1, w, GenOptions{}) {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		reqs = append(reqs, r)
	}
	var first map[string]outcome
	for run := range 20 {
		m := newModel(w)
		for _, i := range rand.New(rand.NewPCG(uint64(run), 1)).Perm(len(reqs)) {
			m.apply(reqs[i])
		}
		if first == nil {
			first = m.seen
			continue
		}
		for id, o := range m.seen {
			if (first[id] == committed) != (o == committed) {
				t.Fatalf("%s: %s in one order, %s in another", id, first[id], o)
			}
		}
	}
	n := 0
	for _, o := range first {
		if o == committed {
			n++
		}
	}
	if n == 0 || n > 5 {
		t.Errorf("%d purchases commit, want 1 to 5", n)
	}

	// Stock beyond MaxQuantity cannot be exceeded by one request: the
	// generator falls back to an unknown item.
	huge := World{
		Items:    map[string]Item{"a": {Stock: MaxStock}},
		Accounts: map[string]Account{"u": {Balance: MaxBalance}},
	}
	for i, l := range generate(t, 100, 1, huge, GenOptions{OutOfStock: 1}) {
		r, err := DecodeLine([]byte(l))
		if err != nil || r.ItemID != "no-such-item-2" && r.ItemID != "no-such-item" {
			t.Errorf("line %d: %+v, %v", i+1, r, err)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	w := bigWorld(1, 1)
	tests := []struct {
		n    int
		w    World
		opts GenOptions
		err  string
	}{
		{-1, w, GenOptions{}, "purchase: GenerateRequests: n = -1 < 0"},
		{1, World{}, GenOptions{}, "purchase: GenerateRequests: the world needs at least one item and one account"},
		{1, World{Items: map[string]Item{"a b": {}}}, GenOptions{}, `purchase: GenerateRequests: world: items["a b"]: contains whitespace or control characters`},
		{1, w, GenOptions{BadCard: -0.1}, "purchase: GenOptions.BadCard = -0.1: must be in [0, 1]"},
		{1, w, GenOptions{Malformed: math.NaN()}, "purchase: GenOptions.Malformed = NaN: must be in [0, 1]"},
		{1, w, GenOptions{UnknownItem: 0.6, Duplicate: 0.6}, "purchase: GenOptions: the shares add up to 1.2, more than 1"},
		{1, w, GenOptions{Skew: 0.5}, "purchase: GenOptions.Skew = 0.5: must be 0 or greater than 1"},
		{1, w, GenOptions{MultiItem: 1.5}, "purchase: GenOptions.MultiItem = 1.5: must be in [0, 1]"},
		{1, w, GenOptions{MultiItem: math.NaN()}, "purchase: GenOptions.MultiItem = NaN: must be in [0, 1]"},
		{1, w, GenOptions{MaxItems: 1}, "purchase: GenOptions.MaxItems = 1: must be 0 or between 2 and 100"},
		{1, w, GenOptions{MaxItems: 101}, "purchase: GenOptions.MaxItems = 101: must be 0 or between 2 and 100"},
		{1, w, GenOptions{TxPrefix: "a b"}, "purchase: GenOptions.TxPrefix: contains whitespace or control characters"},
	}
	for _, tt := range tests {
		err := GenerateRequests(&bytes.Buffer{}, tt.n, 1, tt.w, tt.opts)
		if err == nil || err.Error() != tt.err {
			t.Errorf("GenerateRequests(%d, %+v) = %v, want %q", tt.n, tt.opts, err, tt.err)
		}
	}
	if err := GenerateRequests(&bytes.Buffer{}, 0, 1, World{}, GenOptions{}); err != nil {
		t.Errorf("n = 0 with an empty world: %v", err)
	}
	if err := MixedGenOptions().Validate(); err != nil {
		t.Errorf("MixedGenOptions: %v", err)
	}
}

// TestGenerateMultiItem checks the share and shape of multi-item purchases,
// that every clean one commits in any order, and that some list the same
// items in opposite orders (so that they can deadlock in the inventory).
func TestGenerateMultiItem(t *testing.T) {
	w := bigWorld(8, 50)
	for id := range w.Items {
		w.Items[id] = Item{Stock: 100000}
	}
	const n = 4000
	opts := GenOptions{MultiItem: 0.4, MaxItems: 5, Skew: 1.5}
	lines := generate(t, n, 11, w, opts)
	reqs := make([]Request, len(lines))
	multi := 0
	type pair struct{ a, b string }
	orders := map[pair]bool{}
	for i, l := range lines {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatalf("line %d: %v\n%s", i+1, err, l)
		}
		reqs[i] = r
		if k := len(r.Items); k > 1 {
			multi++
			if k > opts.MaxItems || !strings.Contains(l, `"items":[`) {
				t.Fatalf("line %d: %d items: %s", i+1, k, l)
			}
			for x := range k {
				for y := x + 1; y < k; y++ {
					orders[pair{r.Items[x].ItemID, r.Items[y].ItemID}] = true
				}
			}
		} else if strings.Contains(l, `"items"`) {
			t.Fatalf("line %d: one item in the items form: %s", i+1, l)
		}
	}
	if share := float64(multi) / n; math.Abs(share-opts.MultiItem) > 0.03 {
		t.Errorf("share of multi-item purchases %.3f, want about %.2f", share, opts.MultiItem)
	}
	opposite := 0
	for p := range orders {
		if orders[pair{p.b, p.a}] {
			opposite++
		}
	}
	if opposite == 0 {
		t.Errorf("no two purchases list two items in opposite orders")
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 3 {
		m := newModel(w)
		for _, i := range rng.Perm(len(reqs)) {
			if o := m.apply(reqs[i]); o != committed {
				t.Fatalf("%s: %s, want it committed", reqs[i].TxID, o)
			}
		}
	}

	// With MultiItem 0, MaxItems changes nothing.
	a := generate(t, 300, 5, w, GenOptions{Skew: 1.5})
	b := generate(t, 300, 5, w, GenOptions{Skew: 1.5, MaxItems: 7})
	if !slices.Equal(a, b) {
		t.Errorf("MaxItems changes the output without MultiItem")
	}
}

// TestGenerateMultiItemDryWorld checks that multi-item purchases keep the
// promise of clean purchases when the world runs dry: those that commit do
// so whatever the order.
func TestGenerateMultiItemDryWorld(t *testing.T) {
	w := World{
		Items:    map[string]Item{"a": {Stock: 7}, "b": {Stock: 3}, "c": {Stock: 0}, "d": {Stock: 5}},
		Accounts: map[string]Account{"u": {Balance: 2000_00}, "v": {Balance: 10}},
	}
	var reqs []Request
	for i, l := range generate(t, 100, 3, w, GenOptions{MultiItem: 1, MaxItems: 4}) {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		reqs = append(reqs, r)
	}
	var first map[string]outcome
	for run := range 20 {
		m := newModel(w)
		for _, i := range rand.New(rand.NewPCG(uint64(run), 1)).Perm(len(reqs)) {
			m.apply(reqs[i])
		}
		if first == nil {
			first = m.seen
			continue
		}
		for id, o := range m.seen {
			if (first[id] == committed) != (o == committed) {
				t.Fatalf("%s: %s in one order, %s in another", id, first[id], o)
			}
		}
	}
}

func BenchmarkGenerateRequests(b *testing.B) {
	w := bigWorld(1000, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if err := GenerateRequests(ioDiscard{}, 10000, 1, w, MixedGenOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }
