package purchase

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/dtx-dev/dtx/money"
)

// GenOptions shapes the requests GenerateRequests writes. The zero value
// asks for clean purchases only, picked uniformly.
//
// The six shares are fractions of the lines, each in [0, 1], their sum at
// most 1; the rest are clean purchases. A clean purchase asks for stock and
// money that no other clean purchase of the stream asks for, so every clean
// purchase commits whatever the order or concurrency of the run. Each
// problem line fails whatever the order, too. When the world runs out of
// stock or money, the lines meant to be clean become OutOfStock or
// Insufficient ones.
type GenOptions struct {
	// UnknownItem: purchases of an item the world does not have.
	UnknownItem float64
	// OutOfStock: purchases of more than the item's whole stock.
	OutOfStock float64
	// Insufficient: purchases dearer than the buyer's whole balance.
	Insufficient float64
	// BadCard: purchases whose card number fails the Luhn check (they
	// fail to decode).
	BadCard float64
	// Malformed: lines that fail to decode: cut JSON, a missing field, a
	// negative quantity, a quantity as a string, a price with three
	// decimals or an exponent.
	Malformed float64
	// Duplicate: resubmissions of an earlier clean line, same
	// transaction_id and all.
	Duplicate float64

	// MultiItem is the share, in [0, 1], of the clean purchases that use
	// the items form and list 2 to MaxItems distinct items, in the order
	// they were picked: two such purchases may list the same items in
	// opposite orders, and so deadlock inside the inventory. When fewer
	// than two items with stock left are found, or no buyer can pay, the
	// purchase is a single-item one.
	MultiItem float64
	// MaxItems bounds the items of a multi-item purchase: 0 (for 3), or 2
	// to the package's MaxItems.
	MaxItems int

	// Skew is the exponent of a Zipf distribution (> 1) used to pick items
	// and buyers, so that a few are hot; 0 picks them uniformly.
	Skew float64
	// TxPrefix starts every transaction_id ("t" if empty); the rest is the
	// line's number.
	TxPrefix string
}

// MixedGenOptions returns options with a small share of every problem: 1%
// each, so about 6% of the lines fail.
func MixedGenOptions() GenOptions {
	return GenOptions{
		UnknownItem: 0.01, OutOfStock: 0.01, Insufficient: 0.01,
		BadCard: 0.01, Malformed: 0.01, Duplicate: 0.01,
	}
}

func (o GenOptions) shares() [6]float64 {
	return [6]float64{o.UnknownItem, o.OutOfStock, o.Insufficient, o.BadCard, o.Malformed, o.Duplicate}
}

var shareNames = [6]string{"UnknownItem", "OutOfStock", "Insufficient", "BadCard", "Malformed", "Duplicate"}

// Validate checks the shares, MultiItem, MaxItems, Skew and TxPrefix.
func (o GenOptions) Validate() error {
	sum := 0.0
	for i, v := range o.shares() {
		if !(v >= 0 && v <= 1) { // also refuses NaN
			return fmt.Errorf("purchase: GenOptions.%s = %v: must be in [0, 1]", shareNames[i], v)
		}
		sum += v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("purchase: GenOptions: the shares add up to %v, more than 1", sum)
	}
	if !(o.MultiItem >= 0 && o.MultiItem <= 1) {
		return fmt.Errorf("purchase: GenOptions.MultiItem = %v: must be in [0, 1]", o.MultiItem)
	}
	if o.MaxItems != 0 && (o.MaxItems < 2 || o.MaxItems > MaxItems) {
		return fmt.Errorf("purchase: GenOptions.MaxItems = %d: must be 0 or between 2 and %d", o.MaxItems, MaxItems)
	}
	if o.Skew != 0 && !(o.Skew > 1) {
		return fmt.Errorf("purchase: GenOptions.Skew = %v: must be 0 or greater than 1", o.Skew)
	}
	if o.TxPrefix != "" && checkID(o.TxPrefix) != "" {
		return fmt.Errorf("purchase: GenOptions.TxPrefix: %s", checkID(o.TxPrefix))
	}
	if len(o.TxPrefix) > MaxIDBytes-20 {
		return fmt.Errorf("purchase: GenOptions.TxPrefix: longer than %d bytes", MaxIDBytes-20)
	}
	return nil
}

// GenerateRequests writes n lines of the request format to w, for world,
// shaped by opts, to make benchmark inputs and examples. The same arguments
// give the same bytes, at least within one Go release (math/rand/v2 may
// change how it derives values between releases).
func GenerateRequests(w io.Writer, n int, seed int64, world World, opts GenOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if err := world.Validate(); err != nil {
		return fmt.Errorf("purchase: GenerateRequests: world: %w", err)
	}
	if n < 0 {
		return fmt.Errorf("purchase: GenerateRequests: n = %d < 0", n)
	}
	if n > 0 && (len(world.Items) == 0 || len(world.Accounts) == 0) {
		return errors.New("purchase: GenerateRequests: the world needs at least one item and one account")
	}
	if opts.TxPrefix == "" {
		opts.TxPrefix = "t"
	}
	if opts.MaxItems == 0 {
		opts.MaxItems = 3
	}
	g := newGenerator(seed, world, opts)
	bw := bufio.NewWriter(w)
	for i := range n {
		g.b = g.line(g.b[:0], i+1)
		g.b = append(g.b, '\n')
		if _, err := bw.Write(g.b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

type generator struct {
	rng  *rand.Rand
	opts GenOptions

	items     []string
	price     []money.Cents // per item
	initStock []int64
	stock     []int64 // left after the clean purchases so far
	users     []string
	initBal   []money.Cents
	bal       []money.Cents // left after the clean purchases so far
	itemPerm  []int         // Zipf rank -> item, so the hot items are random ones
	userPerm  []int
	itemZipf  *rand.Zipf
	userZipf  *rand.Zipf
	unknown   string // an item id not in the world

	recent [][]byte // the last clean lines, for duplicates
	b      []byte
}

const recentLines = 64

func newGenerator(seed int64, world World, opts GenOptions) *generator {
	g := &generator{
		rng:   rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)),
		opts:  opts,
		items: slices.Sorted(maps.Keys(world.Items)),
		users: slices.Sorted(maps.Keys(world.Accounts)),
	}
	for _, id := range g.items {
		st := world.Items[id].Stock
		g.initStock = append(g.initStock, st)
		// A shop's price: whole units and a usual ending, 0.99 to 249.99.
		endings := [...]money.Cents{0, 49, 50, 95, 99}
		p := money.Cents(g.rng.Int64N(250))*100 + endings[g.rng.IntN(len(endings))]
		if p == 0 {
			p = 99
		}
		g.price = append(g.price, p)
	}
	g.stock = slices.Clone(g.initStock)
	for _, id := range g.users {
		g.initBal = append(g.initBal, world.Accounts[id].Balance)
	}
	g.bal = slices.Clone(g.initBal)
	g.itemPerm = g.rng.Perm(len(g.items))
	g.userPerm = g.rng.Perm(len(g.users))
	if opts.Skew > 1 && len(g.items) > 0 {
		g.itemZipf = rand.NewZipf(g.rng, opts.Skew, 1, uint64(len(g.items)-1))
		g.userZipf = rand.NewZipf(g.rng, opts.Skew, 1, uint64(len(g.users)-1))
	}
	g.unknown = "no-such-item"
	for k := 2; ; k++ {
		if _, ok := world.Items[g.unknown]; !ok {
			break
		}
		g.unknown = "no-such-item-" + strconv.Itoa(k)
	}
	return g
}

func (g *generator) pickItem() int {
	if g.itemZipf != nil {
		return g.itemPerm[g.itemZipf.Uint64()]
	}
	return g.rng.IntN(len(g.items))
}

func (g *generator) pickUser() int {
	if g.userZipf != nil {
		return g.userPerm[g.userZipf.Uint64()]
	}
	return g.rng.IntN(len(g.users))
}

// spec is one line to write; the number and price fields hold JSON text.
type spec struct {
	tx, user, item string
	quantity       string
	price          string
	lines          []specLine // the items form, instead of item, quantity and price
	badCard        bool
	omitUser       bool
	cut            bool // cut the line in the middle
}

// specLine is one entry of items; quantity and price hold JSON text.
type specLine struct{ item, quantity, price string }

func (g *generator) line(b []byte, no int) []byte {
	u := g.rng.Float64()
	kind := len(shareNames) // clean
	for i, v := range g.opts.shares() {
		if u < v {
			kind = i
			break
		}
		u -= v
	}
	sp := spec{tx: g.opts.TxPrefix + strconv.Itoa(no)}
	switch kind {
	case 0: // UnknownItem
		g.unknownItem(&sp)
	case 1: // OutOfStock
		g.outOfStock(&sp, g.pickItem(), g.pickUser())
	case 2: // Insufficient
		g.insufficient(&sp, g.pickItem(), g.pickUser())
	case 3: // BadCard
		i := g.pickItem()
		g.set(&sp, i, g.pickUser(), 1, g.price[i])
		sp.badCard = true
	case 4: // Malformed
		i := g.pickItem()
		g.set(&sp, i, g.pickUser(), 1, g.price[i])
		switch g.rng.IntN(6) {
		case 0:
			sp.cut = true
		case 1:
			sp.omitUser = true
		case 2:
			sp.quantity = "-1"
		case 3:
			sp.quantity = `"1"`
		case 4:
			sp.price = `"` + g.price[i].String() + `9"`
		case 5:
			sp.price = "1e2"
		}
	case 5: // Duplicate
		if len(g.recent) > 0 {
			return append(b, g.recent[g.rng.IntN(len(g.recent))]...)
		}
		g.clean(&sp)
	default:
		g.clean(&sp)
	}
	start := len(b)
	b = g.render(b, &sp)
	if kind == len(shareNames) || kind == 5 {
		if len(g.recent) < recentLines {
			g.recent = append(g.recent, slices.Clone(b[start:]))
		} else {
			g.recent[g.rng.IntN(recentLines)] = slices.Clone(b[start:])
		}
	}
	return b
}

// outOfStock asks for more than the item's whole stock, or for an unknown
// item if that is beyond MaxQuantity.
func (g *generator) outOfStock(sp *spec, i, u int) {
	q := g.initStock[i] + 1
	if q > MaxQuantity {
		g.unknownItem(sp)
		return
	}
	g.set(sp, i, u, q, g.price[i])
}

// insufficient asks for more than the buyer's whole balance, or for an
// unknown item if that is beyond MaxQuantity * MaxPrice.
func (g *generator) insufficient(sp *spec, i, u int) {
	price := g.price[i]
	q := int64(g.initBal[u]/price) + 1
	if q > MaxQuantity {
		price = MaxPrice
		q = int64(g.initBal[u]/price) + 1
	}
	if q > MaxQuantity {
		g.unknownItem(sp)
		return
	}
	g.set(sp, i, u, q, price)
}

func (g *generator) unknownItem(sp *spec) {
	u := g.pickUser()
	sp.user, sp.item = g.users[u], g.unknown
	sp.quantity, sp.price = "1", `"1.00"`
}

func (g *generator) set(sp *spec, item, user int, q int64, price money.Cents) {
	sp.item, sp.user = g.items[item], g.users[user]
	sp.quantity = strconv.FormatInt(q, 10)
	sp.price = g.priceText(price)
}

// priceText returns price as a JSON number literal or, more often, string.
func (g *generator) priceText(price money.Cents) string {
	if g.rng.IntN(4) == 0 {
		return price.String()
	}
	return `"` + price.String() + `"`
}

// cleanMulti picks a multi-item purchase that the stock and money left can
// pay for, and sets that stock and money aside. It returns false, having
// set nothing aside, when it finds fewer than two items with stock or no
// buyer who can pay.
func (g *generator) cleanMulti(sp *spec) bool {
	if len(g.items) < 2 {
		return false
	}
	k := 2 + g.rng.IntN(min(g.opts.MaxItems, len(g.items))-1)
	picked := make([]int, 0, k)
	qs := make([]int64, 0, k)
	var amount money.Cents
	for try := 0; try < 4*k && len(picked) < k; try++ {
		i := g.pickItem()
		if g.stock[i] == 0 || slices.Contains(picked, i) {
			continue
		}
		q := int64(1)
		if g.rng.IntN(4) == 0 {
			q = 2 + g.rng.Int64N(2)
		}
		q = min(q, g.stock[i])
		picked = append(picked, i)
		qs = append(qs, q)
		amount += g.price[i] * money.Cents(q) // at most 100 × 3 × 249.99
	}
	if len(picked) < 2 {
		return false
	}
	const tries = 8
	u := g.pickUser()
	for try := 0; try < tries && g.bal[u] < amount; try++ {
		u = g.pickUser()
	}
	if g.bal[u] < amount {
		if u = scan(g.rng, len(g.bal), func(j int) bool { return g.bal[j] >= amount }); u < 0 {
			return false
		}
	}
	g.bal[u] -= amount
	sp.user = g.users[u]
	for j, i := range picked {
		g.stock[i] -= qs[j]
		sp.lines = append(sp.lines, specLine{
			item: g.items[i], quantity: strconv.FormatInt(qs[j], 10), price: g.priceText(g.price[i]),
		})
	}
	return true
}

// clean picks a purchase that the stock and money left can pay for, and
// sets that stock and money aside. When a few tries find none, the world
// has run dry: it writes a purchase that fails whatever the order (more
// than the whole stock or the whole balance), never one that might take
// what an earlier clean purchase set aside.
func (g *generator) clean(sp *spec) {
	if g.opts.MultiItem > 0 && g.rng.Float64() < g.opts.MultiItem && g.cleanMulti(sp) {
		return
	}
	const tries = 8
	i := g.pickItem()
	for try := 0; try < tries && g.stock[i] == 0; try++ {
		i = g.pickItem()
	}
	if g.stock[i] == 0 { // the hot items are sold out: take any other
		i = scan(g.rng, len(g.stock), func(j int) bool { return g.stock[j] > 0 })
	}
	if i < 0 {
		i = g.pickItem()
		g.outOfStock(sp, i, g.pickUser())
		return
	}
	q := int64(1)
	if g.rng.IntN(4) == 0 {
		q = 2 + g.rng.Int64N(2)
	}
	q = min(q, g.stock[i])
	amount := g.price[i] * money.Cents(q)
	u := g.pickUser()
	for try := 0; try < tries && g.bal[u] < amount; try++ {
		u = g.pickUser()
	}
	if g.bal[u] < amount {
		u = scan(g.rng, len(g.bal), func(j int) bool { return g.bal[j] >= amount })
	}
	if u < 0 {
		g.insufficient(sp, i, g.pickUser())
		return
	}
	g.stock[i] -= q
	g.bal[u] -= amount
	g.set(sp, i, u, q, g.price[i])
}

// scan returns the first j in 0..n-1, from a random start and wrapping
// around, for which ok(j), or -1.
func scan(rng *rand.Rand, n int, ok func(int) bool) int {
	start := rng.IntN(n)
	for k := range n {
		if j := (start + k) % n; ok(j) {
			return j
		}
	}
	return -1
}

func (g *generator) render(b []byte, sp *spec) []byte {
	start := len(b)
	b = append(b, `{"transaction_id":`...)
	b = appendJSONString(b, sp.tx)
	if !sp.omitUser {
		b = append(b, `,"user_id":`...)
		b = appendJSONString(b, sp.user)
	}
	if len(sp.lines) > 0 {
		b = append(b, `,"items":[`...)
		for i, l := range sp.lines {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"item_id":`...)
			b = appendJSONString(b, l.item)
			b = append(b, `,"quantity":`...)
			b = append(b, l.quantity...)
			b = append(b, `,"price":`...)
			b = append(b, l.price...)
			b = append(b, '}')
		}
		b = append(b, ']')
	} else {
		b = append(b, `,"item_id":`...)
		b = appendJSONString(b, sp.item)
		b = append(b, `,"quantity":`...)
		b = append(b, sp.quantity...)
		b = append(b, `,"price":`...)
		b = append(b, sp.price...)
	}
	b = append(b, `,"payment_details":{"card_number":"`...)
	b = g.appendCard(b, sp.badCard)
	b = append(b, `","expiry":"`...)
	b = appendTwo(b, 1+g.rng.IntN(12))
	b = append(b, '/')
	b = appendTwo(b, 27+g.rng.IntN(7))
	b = append(b, `","cvv":"`...)
	cvv := g.rng.IntN(1000)
	b = append(b, byte('0'+cvv/100), byte('0'+cvv/10%10), byte('0'+cvv%10))
	b = append(b, `"}}`...)
	if sp.cut {
		b = b[:start+(len(b)-start)/2]
	}
	return b
}

func appendTwo(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

// appendCard appends a 16-digit card number starting with 4 whose check
// digit is right (or, if bad, off by one), plain or grouped by spaces or
// dashes.
func (g *generator) appendCard(b []byte, bad bool) []byte {
	var d [16]byte
	d[0] = 4
	for i := 1; i < 15; i++ {
		d[i] = byte(g.rng.IntN(10))
	}
	sum := 0
	for i := 0; i < 15; i++ {
		v := int(d[i])
		if (15-i)%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	d[15] = byte((10 - sum%10) % 10)
	if bad {
		d[15] = (d[15] + 1) % 10
	}
	sep := [...]byte{0, ' ', '-'}[g.rng.IntN(3)]
	for i, v := range d {
		if i > 0 && i%4 == 0 && sep != 0 {
			b = append(b, sep)
		}
		b = append(b, '0'+v)
	}
	return b
}
