package purchase

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/money"
)

var update = flag.Bool("update", false, "rewrite ../examples/world.json from ExampleWorld")

var exampleWorldPath = filepath.Join("..", "examples", "world.json")

// TestExampleWorldFile checks that examples/world.json is ExampleWorld, to the
// byte. Run with -update to rewrite it.
func TestExampleWorldFile(t *testing.T) {
	want, err := ExampleWorld().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(exampleWorldPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(exampleWorldPath)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ParseWorld(data)
	if err != nil {
		t.Fatalf("ParseWorld(%s): %v", exampleWorldPath, err)
	}
	if !reflect.DeepEqual(w, ExampleWorld()) {
		t.Errorf("%s holds %+v, ExampleWorld is %+v (run go test -run TestExampleWorldFile -update)", exampleWorldPath, w, ExampleWorld())
	}
	if string(data) != string(want) {
		t.Errorf("%s is not in the canonical form:\n%s\nwant\n%s", exampleWorldPath, data, want)
	}
}

func TestWorldMarshalJSON(t *testing.T) {
	got, _ := ExampleWorld().MarshalJSON()
	want := `{
  "items": {
    "book": {"stock": 12},
    "lamp": {"stock": 3},
    "mug": {"stock": 40},
    "poster": {"stock": 0}
  },
  "accounts": {
    "alice": {"balance": "500.00"},
    "bob": {"balance": "45.50"},
    "carol": {"balance": "1200.00"},
    "dave": {"balance": "0.00"}
  }
}
`
	if string(got) != want {
		t.Errorf("MarshalJSON:\n%s\nwant\n%s", got, want)
	}
	empty, _ := World{}.MarshalJSON()
	if string(empty) != "{\n  \"items\": {},\n  \"accounts\": {}\n}\n" {
		t.Errorf("empty world: %q", empty)
	}
	// Round trip, with ids that need escaping in JSON.
	w := World{
		Items:    map[string]Item{`a"b`: {Stock: MaxStock}, `c\d`: {}, "é😀": {Stock: 1}},
		Accounts: map[string]Account{"u": {Balance: MaxBalance}, "v": {Balance: 1}},
	}
	data, _ := w.MarshalJSON()
	back, err := ParseWorld(data)
	if err != nil || !reflect.DeepEqual(back, w) {
		t.Errorf("round trip of %s: %+v, %v", data, back, err)
	}
}

func TestParseWorld(t *testing.T) {
	w, err := ParseWorld([]byte(`{"accounts":{"u1":{"balance":500}, "u2":{"balance":"0.5"}},"items":{"i1":{"stock":100},"i2":{"stock":0}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := World{
		Items:    map[string]Item{"i1": {Stock: 100}, "i2": {Stock: 0}},
		Accounts: map[string]Account{"u1": {Balance: 500_00}, "u2": {Balance: 50}},
	}
	if !reflect.DeepEqual(w, want) {
		t.Errorf("ParseWorld = %+v, want %+v", w, want)
	}
	w, err = ParseWorld([]byte(`{"items":{},"accounts":{}}`))
	if err != nil || w.Items == nil || w.Accounts == nil || len(w.Items)+len(w.Accounts) != 0 {
		t.Errorf("empty world: %+v, %v", w, err)
	}
}

func TestParseWorldErrors(t *testing.T) {
	const ok = `"i1":{"stock":1}`
	tests := []struct{ name, in, err string }{
		{"empty", ``, "world: invalid JSON: unexpected end of input at offset 0"},
		{"syntax error after a field error", `{"itms":{}, "items":[}`, "world: invalid JSON: expected a value, found '}' at offset 21"},
		{"not an object", `[]`, "world: expected a JSON object, got array"},
		{"unknown field", `{"itms":{},"items":{},"accounts":{}}`, `world: unknown field "itms"`},
		{"missing items", `{"accounts":{}}`, "world: items: missing"},
		{"missing accounts", `{"items":{}}`, "world: accounts: missing"},
		{"duplicate items", `{"items":{},"items":{},"accounts":{}}`, "world: items: duplicate key"},
		{"items array", `{"items":[],"accounts":{}}`, "world: items: must be an object, got array"},
		{"accounts null", `{"items":{},"accounts":null}`, "world: accounts: must be an object, got null"},
		{"duplicate item", `{"items":{` + ok + `,` + ok + `},"accounts":{}}`, `world: items["i1"]: duplicate key`},
		{"duplicate item escaped", `{"items":{` + ok + `,"\u00691":{"stock":1}},"accounts":{}}`, `world: items["i1"]: duplicate key`},
		{"bad item id", `{"items":{"i 1":{"stock":1}},"accounts":{}}`, `world: items["i 1"]: contains whitespace or control characters`},
		{"empty item id", `{"items":{"":{"stock":1}},"accounts":{}}`, `world: items[""]: must not be empty`},
		{"item not an object", `{"items":{"i1":5},"accounts":{}}`, `world: items["i1"]: must be an object, got number`},
		{"item unknown field", `{"items":{"i1":{"stock":1,"stok":2}},"accounts":{}}`, `world: items["i1"]: unknown field "stok"`},
		{"item missing stock", `{"items":{"i1":{}},"accounts":{}}`, `world: items["i1"].stock: missing`},
		{"item duplicate stock", `{"items":{"i1":{"stock":1,"stock":2}},"accounts":{}}`, `world: items["i1"].stock: duplicate key`},
		{"stock negative", `{"items":{"i1":{"stock":-1}},"accounts":{}}`, `world: items["i1"].stock: must be between 0 and 1000000000`},
		{"stock too large", `{"items":{"i1":{"stock":1000000001}},"accounts":{}}`, `world: items["i1"].stock: must be between 0 and 1000000000`},
		{"stock huge", `{"items":{"i1":{"stock":99999999999999999999999}},"accounts":{}}`, `world: items["i1"].stock: must be between 0 and 1000000000`},
		{"stock fraction", `{"items":{"i1":{"stock":1.5}},"accounts":{}}`, `world: items["i1"].stock: must be an integer`},
		{"stock string", `{"items":{"i1":{"stock":"5"}},"accounts":{}}`, `world: items["i1"].stock: must be an integer, got string`},
		{"account unknown field", `{"items":{},"accounts":{"u1":{"balance":"1.00","currency":"EUR"}}}`, `world: accounts["u1"]: unknown field "currency"`},
		{"account missing balance", `{"items":{},"accounts":{"u1":{}}}`, `world: accounts["u1"].balance: missing`},
		{"balance negative", `{"items":{},"accounts":{"u1":{"balance":"-1.00"}}}`, `world: accounts["u1"].balance: must not be negative`},
		{"balance huge negative", `{"items":{},"accounts":{"u1":{"balance":-99999999999999999999999}}}`, `world: accounts["u1"].balance: must not be negative`},
		{"balance three decimals", `{"items":{},"accounts":{"u1":{"balance":1.234}}}`, `world: accounts["u1"].balance: more than two decimal places`},
		{"balance too large", `{"items":{},"accounts":{"u1":{"balance":"1000000000000.01"}}}`, `world: accounts["u1"].balance: must be at most 1000000000000.00`},
		{"balance boolean", `{"items":{},"accounts":{"u1":{"balance":true}}}`, `world: accounts["u1"].balance: must be a number or a string, got boolean`},
		{"account id with tab", `{"items":{},"accounts":{"u\t1":{"balance":1}}}`, `world: accounts["u\t1"]: contains whitespace or control characters`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseWorld([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseWorld(%s) = %+v, want error %q", tt.in, w, tt.err)
			}
			if err.Error() != tt.err {
				t.Fatalf("ParseWorld(%s)\nerror %q\n want %q", tt.in, err, tt.err)
			}
			var se *SyntaxError
			var fe *FieldError
			if !errors.As(err, &se) && !errors.As(err, &fe) {
				t.Errorf("error %T wraps neither a *SyntaxError nor a *FieldError", err)
			}
		})
	}
}

func TestWorldValidate(t *testing.T) {
	if err := ExampleWorld().Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		w   World
		err string
	}{
		{World{Items: map[string]Item{"a b": {}}}, `items["a b"]: contains whitespace or control characters`},
		{World{Items: map[string]Item{"i": {Stock: -1}}}, `items["i"].stock: must be between 0 and 1000000000`},
		{World{Accounts: map[string]Account{"u": {Balance: -1}}}, `accounts["u"].balance: must not be negative`},
		{World{Accounts: map[string]Account{strings.Repeat("u", 200): {}}}, `accounts["` + strings.Repeat("u", 40) + `…"]: longer than 128 bytes`},
		{World{Accounts: map[string]Account{"u": {Balance: money.Max}}}, `accounts["u"].balance: must be at most 1000000000000.00`},
	}
	for _, tt := range tests {
		if err := tt.w.Validate(); err == nil || err.Error() != tt.err {
			t.Errorf("Validate(%+v) = %v, want %q", tt.w, err, tt.err)
		}
	}
}
