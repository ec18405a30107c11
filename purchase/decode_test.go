package purchase

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// goodLine is the request of the package doc.
const goodLine = `{"transaction_id":"t1","user_id":"u1","item_id":"i1","quantity":2,"price":"9.99",` +
	`"payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}`

var goodRequest = Request{
	TxID: "t1", UserID: "u1", Items: []LineItem{{ItemID: "i1", Quantity: 2, Price: 999}},
	ItemID: "i1", Quantity: 2, Price: 999, Amount: 1998,
	Card: Card{Last4: "1111", ExpMonth: 12, ExpYear: 2029},
}

// goodMultiLine is goodLine with three items instead of one.
const goodMultiLine = `{"transaction_id":"t1","user_id":"u1","items":[` +
	`{"item_id":"i1","quantity":2,"price":"9.99"},{"item_id":"i2","quantity":1,"price":0.5},` +
	`{"item_id":"i0","quantity":3,"price":"100"}],` +
	`"payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}`

var goodMultiRequest = Request{
	TxID: "t1", UserID: "u1",
	Items:  []LineItem{{ItemID: "i1", Quantity: 2, Price: 999}, {ItemID: "i2", Quantity: 1, Price: 50}, {ItemID: "i0", Quantity: 3, Price: 10000}},
	Amount: 1998 + 50 + 30000,
	Card:   Card{Last4: "1111", ExpMonth: 12, ExpYear: 2029},
}

// withItems returns goodLine with items (raw JSON) in place of item_id,
// quantity and price.
func withItems(items string) string {
	return line("item_id", "-", "quantity", "-", "price", "-", "items", items)
}

// entry renders one entry of items with some fields changed, like line.
func entry(kv ...string) string {
	fields := []string{"item_id", `"i1"`, "quantity", `2`, "price", `"9.99"`}
	for i := 0; i < len(kv); i += 2 {
		found := false
		for j := 0; j < len(fields); j += 2 {
			if fields[j] == kv[i] {
				fields[j+1], found = kv[i+1], true
			}
		}
		if !found {
			fields = append(fields, kv[i], kv[i+1])
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(fields); i += 2 {
		if fields[i+1] == "-" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + fields[i] + `":` + fields[i+1])
	}
	return b.String() + "}"
}

// entries renders n good entries of items, i0..i<n-1>, then extra ones.
func entries(n int, extra ...string) string {
	var parts []string
	for i := range n {
		parts = append(parts, entry("item_id", `"i`+strconv.Itoa(i)+`"`))
	}
	return "[" + strings.Join(append(parts, extra...), ",") + "]"
}

// single returns r in the normalized single-item form: Items is the one
// line of ItemID, Quantity and Price.
func single(r Request) Request {
	r.Items = []LineItem{{ItemID: r.ItemID, Quantity: r.Quantity, Price: r.Price}}
	return r
}

// line renders goodLine with some fields changed: kv holds pairs of a key
// and its raw JSON value, "-" to leave the key out. Keys of payment_details
// are named "payment_details.<key>".
func line(kv ...string) string {
	top := []string{"transaction_id", `"t1"`, "user_id", `"u1"`, "item_id", `"i1"`,
		"quantity", `2`, "price", `"9.99"`, "payment_details", ""}
	pay := []string{"card_number", `"4111 1111 1111 1111"`, "expiry", `"12/29"`, "cvv", `"123"`}
	set := func(fields []string, k, v string) bool {
		for i := 0; i < len(fields); i += 2 {
			if fields[i] == k {
				fields[i+1] = v
				return true
			}
		}
		return false
	}
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		if p, ok := strings.CutPrefix(k, "payment_details."); ok {
			if !set(pay, p, v) {
				pay = append(pay, p, v)
			}
		} else if !set(top, k, v) {
			top = append(top, k, v)
		}
	}
	render := func(fields []string) string {
		var b strings.Builder
		b.WriteByte('{')
		for i := 0; i < len(fields); i += 2 {
			if fields[i+1] == "-" {
				continue
			}
			if b.Len() > 1 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + fields[i] + `":` + fields[i+1])
		}
		b.WriteByte('}')
		return b.String()
	}
	if top[11] == "" {
		top[11] = render(pay)
	}
	return render(top)
}

func TestLineHelper(t *testing.T) {
	if got := line(); got != goodLine {
		t.Fatalf("line() = %s\nwant      %s", got, goodLine)
	}
	const want = `{"transaction_id":"t1","user_id":"u1","payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"},` +
		`"items":[{"item_id":"i1","quantity":2,"price":"9.99"},{"item_id":"i1","price":"1.00","note":1}]}`
	if got := withItems("[" + entry() + "," + entry("quantity", "-", "price", `"1.00"`, "note", "1") + "]"); got != want {
		t.Fatalf("withItems = %s\nwant        %s", got, want)
	}
}

func TestDecodeLineGood(t *testing.T) {
	with := func(f func(r *Request)) Request {
		r := goodRequest
		f(&r)
		return single(r)
	}
	long := strings.Repeat("x", MaxIDBytes)
	tests := []struct {
		name string
		line string
		want Request
	}{
		{"doc example", goodLine, goodRequest},
		{"price as number", line("price", `9.99`), goodRequest},
		{"price without decimals", line("price", `"10"`), with(func(r *Request) { r.Price, r.Amount = 1000, 2000 })},
		{"price with one decimal", line("price", `10.5`), with(func(r *Request) { r.Price, r.Amount = 1050, 2100 })},
		{"price with leading zeros", line("price", `"009.99"`), goodRequest},
		{"largest", line("quantity", `1000000`, "price", `"1000000000.00"`),
			with(func(r *Request) { r.Quantity, r.Price, r.Amount = 1_000_000, MaxPrice, 1_000_000*MaxPrice })},
		{"smallest", line("quantity", `1`, "price", `0.01`),
			with(func(r *Request) { r.Quantity, r.Price, r.Amount = 1, 1, 1 })},
		{"card with dashes", line("payment_details.card_number", `"4111-1111-1111-1111"`), goodRequest},
		{"card without separators", line("payment_details.card_number", `"4111111111111111"`), goodRequest},
		{"card 15 digits, cvv 4", line("payment_details.card_number", `"3782 822463 10005"`, "payment_details.cvv", `"1234"`),
			with(func(r *Request) { r.Card.Last4 = "0005" })},
		{"card 12 digits", line("payment_details.card_number", `"000000000000"`), with(func(r *Request) { r.Card.Last4 = "0000" })},
		{"card 19 digits", line("payment_details.card_number", `"4111111111111111110"`), with(func(r *Request) { r.Card.Last4 = "1110" })},
		{"expiry January 2000", line("payment_details.expiry", `"01/00"`),
			with(func(r *Request) { r.Card.ExpMonth, r.Card.ExpYear = 1, 2000 })},
		{"non-ASCII id", line("user_id", `"jürgen-ß"`), with(func(r *Request) { r.UserID = "jürgen-ß" })},
		{"id of 128 bytes", line("item_id", `"`+long+`"`), with(func(r *Request) { r.ItemID = long })},
		{"escaped id", line("transaction_id", `"t\u0031\/\"\\"`), with(func(r *Request) { r.TxID = `t1/"\` })},
		{"surrogate pair", line("item_id", `"\ud83d\ude00"`), with(func(r *Request) { r.ItemID = "😀" })},
		{"escaped keys", `{"transaction\u005fid":"t1","user_id":"u1","item_id":"i1","quantity":2,"price":"9.99",` +
			`"payment_details":{"card_\u006eumber":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}`, goodRequest},
		{"escaped price", line("price", `"\u0039.99"`), goodRequest},
		{"fully escaped key", strings.Replace(goodLine, `"payment_details"`,
			`"\u0070\u0061\u0079\u006d\u0065\u006e\u0074\u005f\u0064\u0065\u0074\u0061\u0069\u006c\u0073"`, 1), goodRequest},
		{"unknown fields ignored", line("note", `{"a":[1,2.5e3,{"b":null,"c":[true,false,"x"]}],"transaction_id":7}`,
			"payment_details.holder", `"A B"`), goodRequest},
		{"unknown key in another case", line("Transaction_ID", `5`), goodRequest},
		{"other order", `{"payment_details":{"cvv":"123","expiry":"12/29","card_number":"4111 1111 1111 1111"},` +
			`"price":"9.99","quantity":2,"item_id":"i1","user_id":"u1","transaction_id":"t1"}`, goodRequest},
		{"whitespace", " \t{ \"transaction_id\" : \"t1\" ,\n\"user_id\":\"u1\",\"item_id\":\"i1\",\"quantity\":2,\"price\":\"9.99\"," +
			"\"payment_details\":{\"card_number\":\"4111 1111 1111 1111\",\"expiry\":\"12/29\",\"cvv\":\"123\"} }\r\n", goodRequest},

		// The items form.
		{"items", goodMultiLine, goodMultiRequest},
		{"items of one entry is the single form", withItems("[" + entry() + "]"), goodRequest},
		{"items first", `{"items":[{"price":"9.99","quantity":2,"item_id":"i1"}],"transaction_id":"t1","user_id":"u1",` +
			`"payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}`, goodRequest},
		{"items with whitespace and unknown keys", withItems(" [ " + entry("note", `[{"item_id":"x"}]`) + " , " +
			entry("item_id", `"i2"`, "price", "1", "item", `"i1"`) + " ] "),
			Request{TxID: "t1", UserID: "u1", Items: []LineItem{{"i1", 2, 999}, {"i2", 2, 100}}, Amount: 2198, Card: goodRequest.Card}},
		{"items with ids that differ in case", withItems("[" + entry() + "," + entry("item_id", `"I1"`) + "]"),
			Request{TxID: "t1", UserID: "u1", Items: []LineItem{{"i1", 2, 999}, {"I1", 2, 999}}, Amount: 3996, Card: goodRequest.Card}},
		{"100 items", withItems(entries(MaxItems)), func() Request {
			r := Request{TxID: "t1", UserID: "u1", Amount: MaxItems * 1998, Card: goodRequest.Card}
			for i := range MaxItems {
				r.Items = append(r.Items, LineItem{"i" + strconv.Itoa(i), 2, 999})
			}
			return r
		}()},
		{"largest total", withItems(func() string {
			var parts []string
			for i := range 92 {
				parts = append(parts, entry("item_id", `"i`+strconv.Itoa(i)+`"`, "quantity", "1000000", "price", `"1000000000.00"`))
			}
			return "[" + strings.Join(parts, ",") + "]"
		}()), func() Request {
			r := Request{TxID: "t1", UserID: "u1", Amount: 92 * MaxQuantity * MaxPrice, Card: goodRequest.Card}
			for i := range 92 {
				r.Items = append(r.Items, LineItem{"i" + strconv.Itoa(i), MaxQuantity, MaxPrice})
			}
			return r
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeLine([]byte(tt.line))
			if err != nil {
				t.Fatalf("DecodeLine(%s): %v", tt.line, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("DecodeLine(%s)\n got %+v\nwant %+v", tt.line, got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// decodeErrorTests holds bad lines and the exact text of their errors.
var decodeErrorTests = []struct {
	name, line, err string
}{
	// Not JSON.
	{"empty", ``, "invalid JSON: unexpected end of input at offset 0"},
	{"blank", `   `, "invalid JSON: unexpected end of input at offset 3"},
	{"cut", goodLine[:42], "invalid JSON: unexpected end of input at offset 42"},
	{"cut in string", `{"transaction_id":"t`, "invalid JSON: unexpected end of input at offset 20"},
	{"cut in literal", `{"x":tru`, "invalid JSON: unexpected end of input at offset 8"},
	{"bad literal", `{"x":trux}`, "invalid JSON: expected 'true', found 'x' at offset 8"},
	{"bare word", `{"x":nope}`, "invalid JSON: expected 'null', found 'o' at offset 6"},
	{"trailing comma", `{"transaction_id":"t1",}`, "invalid JSON: expected a string key, found '}' at offset 23"},
	{"no key", `{,}`, "invalid JSON: expected a string key or '}', found ',' at offset 1"},
	{"unquoted key", `{transaction_id:"t1"}`, "invalid JSON: expected a string key or '}', found 't' at offset 1"},
	{"missing colon", `{"a" 1}`, "invalid JSON: expected ':' after object key, found '1' at offset 5"},
	{"missing comma", `{"a":1 "b":2}`, "invalid JSON: expected ',' or '}' after object member, found '\"' at offset 7"},
	{"array missing comma", `{"a":[1 2]}`, "invalid JSON: expected ',' or ']' after array element, found '2' at offset 8"},
	{"array trailing comma", `{"a":[1,]}`, "invalid JSON: expected a value, found ']' at offset 8"},
	{"after the object", `{} x`, "invalid JSON: expected end of input after the JSON value, found 'x' at offset 3"},
	{"two objects", `{}{}`, "invalid JSON: expected end of input after the JSON value, found '{' at offset 2"},
	{"single quotes", `{'a':1}`, "invalid JSON: expected a string key or '}', found '\\'' at offset 1"},
	{"leading zero", `{"quantity":02}`, "invalid JSON: expected ',' or '}' after object member, found '2' at offset 13"},
	{"plus sign", `{"quantity":+2}`, "invalid JSON: expected a value, found '+' at offset 12"},
	{"lone minus", `{"quantity":-}`, "invalid JSON: expected a digit, found '}' at offset 13"},
	{"point without digits", `{"price":1.}`, "invalid JSON: expected a digit after the decimal point, found '}' at offset 11"},
	{"exponent without digits", `{"price":1e}`, "invalid JSON: expected a digit in the exponent, found '}' at offset 11"},
	{"NaN", `{"price":NaN}`, "invalid JSON: expected a value, found 'N' at offset 9"},
	{"control character", "{\"user_id\":\"u\x01\"}", "invalid JSON: unescaped control character in string at offset 13"},
	{"raw tab in string", "{\"user_id\":\"u\t\"}", "invalid JSON: unescaped control character in string at offset 13"},
	{"bad escape", `{"user_id":"u\x"}`, "invalid JSON: invalid escape character 'x' in string at offset 13"},
	{"bad \\u escape", `{"user_id":"\u12G4"}`, "invalid JSON: invalid \\u escape in string at offset 12"},
	{"lone high surrogate", `{"user_id":"\ud800x"}`, "invalid JSON: lone surrogate in \\u escape at offset 12"},
	{"lone low surrogate", `{"user_id":"\udc00\ud800"}`, "invalid JSON: lone surrogate in \\u escape at offset 12"},
	{"high surrogate then BMP", `{"user_id":"\ud800\u0041"}`, "invalid JSON: lone surrogate in \\u escape at offset 12"},
	{"invalid UTF-8", "{\"user_id\":\"u\xff\"}", "invalid JSON: invalid UTF-8 in string at offset 13"},
	{"UTF-8 surrogate", "{\"user_id\":\"\xed\xa0\x80\"}", "invalid JSON: invalid UTF-8 in string at offset 12"},
	{"invalid UTF-8 outside", "{\xff}", "invalid JSON: expected a string key or '}', found byte 0xff at offset 1"},
	{"too deep", `{"x":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
		"invalid JSON: nested deeper than 64 levels at offset 68"},
	{"syntax error wins over an earlier field error", `{"quantity":"x","user_id":}`,
		"invalid JSON: expected a value, found '}' at offset 26"},

	// Not an object.
	{"array", `[1,2]`, "expected a JSON object, got array"},
	{"string", `"t1"`, "expected a JSON object, got string"},
	{"number", `42`, "expected a JSON object, got number"},
	{"null", `null`, "expected a JSON object, got null"},
	{"boolean", `true`, "expected a JSON object, got boolean"},

	// Missing and duplicate fields.
	{"empty object", `{}`, "transaction_id: missing"},
	{"missing transaction_id", line("transaction_id", "-"), "transaction_id: missing"},
	{"missing user_id", line("user_id", "-"), "user_id: missing"},
	{"missing item_id and user_id", line("item_id", "-", "user_id", "-"), "user_id: missing"},
	{"missing quantity", line("quantity", "-"), "quantity: missing"},
	{"missing price", line("price", "-"), "price: missing"},
	{"missing payment_details", line("payment_details", "-"), "payment_details: missing"},
	{"missing card_number", line("payment_details.card_number", "-"), "payment_details.card_number: missing"},
	{"missing expiry", line("payment_details.expiry", "-"), "payment_details.expiry: missing"},
	{"missing cvv", line("payment_details.cvv", "-"), "payment_details.cvv: missing"},
	{"key in another case", line("transaction_id", "-", "Transaction_Id", `"t1"`), "transaction_id: missing"},
	{"duplicate transaction_id", line("x", "1") + `,"transaction_id":"t1"}`[1:], ""}, // replaced in init
	{"duplicate price", `{"price":"1.00","price":"2.00"}`, "price: duplicate key"},
	{"duplicate escaped", `{"quantity":1,"quantit\u0079":2}`, "quantity: duplicate key"},
	{"duplicate cvv", line("payment_details.cvv", `"123","cvv":"456"`), "payment_details.cvv: duplicate key"},
	{"duplicate payment_details", line("payment_details.x", `1},"payment_details":{`), "payment_details: duplicate key"},

	// ids.
	{"transaction_id number", line("transaction_id", `1`), "transaction_id: must be a string, got number"},
	{"transaction_id null", line("transaction_id", `null`), "transaction_id: must be a string, got null"},
	{"transaction_id array", line("transaction_id", `["t1"]`), "transaction_id: must be a string, got array"},
	{"transaction_id object", line("transaction_id", `{}`), "transaction_id: must be a string, got object"},
	{"transaction_id boolean", line("transaction_id", `false`), "transaction_id: must be a string, got boolean"},
	{"transaction_id empty", line("transaction_id", `""`), "transaction_id: must not be empty"},
	{"transaction_id too long", line("transaction_id", `"`+strings.Repeat("x", 129)+`"`), "transaction_id: longer than 128 bytes"},
	{"transaction_id too long by escapes", line("transaction_id", `"`+strings.Repeat(`\u00e9`, 65)+`"`), "transaction_id: longer than 128 bytes"},
	{"transaction_id space", line("transaction_id", `"t 1"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id newline", line("transaction_id", `"t\n1"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id NUL", line("transaction_id", `"t\u0000"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id DEL", line("transaction_id", `"t\u007f"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id NEL", line("transaction_id", `"t\u0085"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id no-break space", line("transaction_id", `"t`+"\u00a0"+`1"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id line separator", line("transaction_id", `"t\u2028"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id zero width space", line("transaction_id", `"t`+"\u200b"+`"`), "transaction_id: contains whitespace or control characters"},
	{"transaction_id bidi override", line("transaction_id", `"t\u202e"`), "transaction_id: contains whitespace or control characters"},
	{"user_id number", line("user_id", `7`), "user_id: must be a string, got number"},
	{"user_id empty", line("user_id", `""`), "user_id: must not be empty"},
	{"user_id tab", line("user_id", `"u\t1"`), "user_id: contains whitespace or control characters"},
	{"item_id null", line("item_id", `null`), "item_id: must be a string, got null"},
	{"item_id too long", line("item_id", `"`+strings.Repeat("é", 65)+`"`), "item_id: longer than 128 bytes"},
	{"item_id space", line("item_id", `" i1"`), "item_id: contains whitespace or control characters"},

	// quantity.
	{"quantity string", line("quantity", `"2"`), "quantity: must be an integer, got string"},
	{"quantity null", line("quantity", `null`), "quantity: must be an integer, got null"},
	{"quantity boolean", line("quantity", `true`), "quantity: must be an integer, got boolean"},
	{"quantity array", line("quantity", `[2]`), "quantity: must be an integer, got array"},
	{"quantity 2.0", line("quantity", `2.0`), "quantity: must be an integer"},
	{"quantity 2.5", line("quantity", `2.5`), "quantity: must be an integer"},
	{"quantity 2e0", line("quantity", `2e0`), "quantity: must be an integer"},
	{"quantity 1E2", line("quantity", `1E2`), "quantity: must be an integer"},
	{"quantity zero", line("quantity", `0`), "quantity: must be between 1 and 1000000"},
	{"quantity minus zero", line("quantity", `-0`), "quantity: must be between 1 and 1000000"},
	{"quantity negative", line("quantity", `-2`), "quantity: must be between 1 and 1000000"},
	{"quantity too large", line("quantity", `1000001`), "quantity: must be between 1 and 1000000"},
	{"quantity huge", line("quantity", `99999999999999999999999999`), "quantity: must be between 1 and 1000000"},
	{"quantity huge negative", line("quantity", `-99999999999999999999999999`), "quantity: must be between 1 and 1000000"},

	// price.
	{"price three decimals", line("price", `"9.999"`), "price: more than two decimal places"},
	{"price three decimals number", line("price", `9.999`), "price: more than two decimal places"},
	{"price trailing zero", line("price", `9.990`), "price: more than two decimal places"},
	{"price exponent", line("price", `1e3`), "price: exponent notation not allowed"},
	{"price exponent in string", line("price", `"1e3"`), "price: exponent notation not allowed"},
	{"price zero", line("price", `0`), "price: must be greater than 0"},
	{"price zero string", line("price", `"0.00"`), "price: must be greater than 0"},
	{"price negative", line("price", `-1.50`), "price: must be greater than 0"},
	{"price negative string", line("price", `"-1.50"`), "price: must be greater than 0"},
	{"price huge negative", line("price", `-99999999999999999999999`), "price: must be greater than 0"},
	{"price too large", line("price", `"1000000000.01"`), "price: must be at most 1000000000.00"},
	{"price huge", line("price", `99999999999999999999999`), "price: must be at most 1000000000.00"},
	{"price empty", line("price", `""`), "price: empty"},
	{"price space", line("price", `" 9.99"`), "price: contains whitespace"},
	{"price comma", line("price", `"9,99"`), "price: invalid character ','"},
	{"price plus", line("price", `"+9.99"`), "price: plus sign not allowed"},
	{"price no integer part", line("price", `".99"`), "price: missing digits before the decimal point"},
	{"price no fraction", line("price", `"9."`), "price: missing digits after the decimal point"},
	{"price currency", line("price", `"$9.99"`), "price: invalid character '$'"},
	{"price boolean", line("price", `true`), "price: must be a number or a string, got boolean"},
	{"price null", line("price", `null`), "price: must be a number or a string, got null"},
	{"price object", line("price", `{"amount":"9.99"}`), "price: must be a number or a string, got object"},

	// payment_details.
	{"payment_details string", line("payment_details", `"4111111111111111"`), "payment_details: must be an object, got string"},
	{"payment_details null", line("payment_details", `null`), "payment_details: must be an object, got null"},
	{"payment_details array", line("payment_details", `[]`), "payment_details: must be an object, got array"},
	{"payment_details empty", line("payment_details", `{}`), "payment_details.card_number: missing"},
	{"card_number number", line("payment_details.card_number", `4111111111111111`), "payment_details.card_number: must be a string, got number"},
	{"card_number null", line("payment_details.card_number", `null`), "payment_details.card_number: must be a string, got null"},
	{"card_number Luhn", line("payment_details.card_number", `"4111 1111 1111 1112"`), "payment_details.card_number: fails the Luhn check"},
	{"card_number swapped digits", line("payment_details.card_number", `"4111 1111 1111 1121"`), "payment_details.card_number: fails the Luhn check"},
	{"card_number letters", line("payment_details.card_number", `"4111 1111 1111 111x"`), "payment_details.card_number: must contain only digits, spaces and dashes"},
	{"card_number dots", line("payment_details.card_number", `"4111.1111.1111.1111"`), "payment_details.card_number: must contain only digits, spaces and dashes"},
	{"card_number tab", line("payment_details.card_number", `"4111\t1111\t1111\t1111"`), "payment_details.card_number: must contain only digits, spaces and dashes"},
	{"card_number empty", line("payment_details.card_number", `""`), "payment_details.card_number: must have 12 to 19 digits"},
	{"card_number 11 digits", line("payment_details.card_number", `"4111 1111 111"`), "payment_details.card_number: must have 12 to 19 digits"},
	{"card_number 20 digits", line("payment_details.card_number", `"41111111111111111111"`), "payment_details.card_number: must have 12 to 19 digits"},
	{"card_number masked", line("payment_details.card_number", `"**** **** **** 1111"`), "payment_details.card_number: must contain only digits, spaces and dashes"},
	{"expiry number", line("payment_details.expiry", `1229`), "payment_details.expiry: must be a string, got number"},
	{"expiry no slash", line("payment_details.expiry", `"1229"`), "payment_details.expiry: must be MM/YY"},
	{"expiry four-digit year", line("payment_details.expiry", `"12/2029"`), "payment_details.expiry: must be MM/YY"},
	{"expiry one-digit month", line("payment_details.expiry", `"1/29"`), "payment_details.expiry: must be MM/YY"},
	{"expiry letters", line("payment_details.expiry", `"ab/cd"`), "payment_details.expiry: must be MM/YY"},
	{"expiry dash", line("payment_details.expiry", `"12-29"`), "payment_details.expiry: must be MM/YY"},
	{"expiry month 13", line("payment_details.expiry", `"13/29"`), "payment_details.expiry: month must be between 01 and 12"},
	{"expiry month 00", line("payment_details.expiry", `"00/29"`), "payment_details.expiry: month must be between 01 and 12"},
	{"cvv number", line("payment_details.cvv", `123`), "payment_details.cvv: must be a string, got number"},
	{"cvv two digits", line("payment_details.cvv", `"12"`), "payment_details.cvv: must be 3 or 4 digits"},
	{"cvv five digits", line("payment_details.cvv", `"12345"`), "payment_details.cvv: must be 3 or 4 digits"},
	{"cvv letter", line("payment_details.cvv", `"12a"`), "payment_details.cvv: must be 3 or 4 digits"},
	{"cvv space", line("payment_details.cvv", `"123 "`), "payment_details.cvv: must be 3 or 4 digits"},

	// The first field error in the line wins.
	{"first error wins", line("quantity", `0`, "price", `"x"`), "quantity: must be between 1 and 1000000"},
	{"type error before missing", line("user_id", "-", "item_id", `1`), "item_id: must be a string, got number"},
	{"payment error before a later top error", `{"payment_details":{"cvv":"1"},"quantity":0}`, "payment_details.cvv: must be 3 or 4 digits"},

	// items.
	{"items and item_id", line("items", "["+entry()+"]"), "items: cannot be given with item_id"},
	{"items and price", line("item_id", "-", "quantity", "-", "items", "["+entry()+"]"), "items: cannot be given with price"},
	{"quantity after items", `{"transaction_id":"t1","items":[` + entry() + `],"quantity":2}`, "quantity: cannot be given with items"},
	{"items bad, then item_id", `{"items":[],"item_id":"i1"}`, "items: must not be empty"},
	{"item_id bad, then items", `{"item_id":"","items":[]}`, "item_id: must not be empty"},
	{"items not an array", withItems(entry()), "items: must be an array, got object"},
	{"items null", withItems("null"), "items: must be an array, got null"},
	{"items empty", withItems("[]"), "items: must not be empty"},
	{"items duplicate key", withItems("[" + entry() + `],"items":[` + entry() + "]"), "items: duplicate key"},
	{"items too many", withItems(entries(MaxItems + 1)), "items: more than 100 entries"},
	{"items too many, syntax checked", withItems(entries(MaxItems, `[1,]`)), "invalid JSON: expected a value, found ']' at offset 4725"},
	{"items error within the first 100 wins", withItems(entries(MaxItems-1, entry("item_id", `"x"`, "quantity", "0"), entry("item_id", `"y"`, "price", "0"))), "items[99].quantity: must be between 1 and 1000000"},
	{"items cut", withItems("[" + entry())[:len(withItems("["+entry()))-2], "invalid JSON: unexpected end of input at offset 175"},
	{"items missing comma", withItems("[" + entry() + " " + entry() + "]"), "invalid JSON: expected ',' or ']' after array element, found '{' at offset 177"},
	{"entry not an object", withItems("[" + entry() + `,"i2"]`), "items[1]: must be an object, got string"},
	{"entry null", withItems("[null]"), "items[0]: must be an object, got null"},
	{"entry empty", withItems("[{}]"), "items[0].item_id: missing"},
	{"entry missing item_id", withItems("[" + entry("item_id", "-") + "]"), "items[0].item_id: missing"},
	{"entry missing quantity", withItems(entries(2, entry("item_id", `"i9"`, "quantity", "-"))), "items[2].quantity: missing"},
	{"entry missing price", withItems(entries(1, entry("item_id", `"i9"`, "price", "-"))), "items[1].price: missing"},
	{"entry duplicate key", withItems("[" + entry("price", `"1.00","price":"2.00"`) + "]"), "items[0].price: duplicate key"},
	{"entry duplicate escaped key", withItems("[" + entry(`item_\u0069d`, `"i2"`) + "]"), "items[0].item_id: duplicate key"},
	{"entry item_id number", withItems("[" + entry("item_id", "1") + "]"), "items[0].item_id: must be a string, got number"},
	{"entry item_id empty", withItems(entries(1, entry("item_id", `""`))), "items[1].item_id: must not be empty"},
	{"entry item_id space", withItems(entries(3, entry("item_id", `"i 1"`))), "items[3].item_id: contains whitespace or control characters"},
	{"entry item_id too long", withItems("[" + entry("item_id", `"`+strings.Repeat("x", 129)+`"`) + "]"), "items[0].item_id: longer than 128 bytes"},
	{"entry quantity string", withItems("[" + entry("quantity", `"2"`) + "]"), "items[0].quantity: must be an integer, got string"},
	{"entry quantity 2.0", withItems("[" + entry("quantity", `2.0`) + "]"), "items[0].quantity: must be an integer"},
	{"entry quantity 0", withItems("[" + entry("quantity", `0`) + "]"), "items[0].quantity: must be between 1 and 1000000"},
	{"entry price three decimals", withItems(entries(2, entry("item_id", `"x"`, "price", `"9.999"`))), "items[2].price: more than two decimal places"},
	{"entry price exponent", withItems("[" + entry("price", `1e3`) + "]"), "items[0].price: exponent notation not allowed"},
	{"entry price zero", withItems("[" + entry("price", `0`) + "]"), "items[0].price: must be greater than 0"},
	{"entry price too large", withItems("[" + entry("price", `"1000000000.01"`) + "]"), "items[0].price: must be at most 1000000000.00"},
	{"entry price null", withItems("[" + entry("price", `null`) + "]"), "items[0].price: must be a number or a string, got null"},
	{"entry price empty", withItems("[" + entry("price", `""`) + "]"), "items[0].price: empty"},
	{"same item twice", withItems(entries(3, entry("item_id", `"i1"`))), "items[3].item_id: same as items[1].item_id"},
	{"same item twice, escaped", withItems("[" + entry() + "," + entry("item_id", `"i1"`) + "]"), "items[1].item_id: same as items[0].item_id"},
	{"first error in items wins", withItems("[" + entry("price", "0") + "," + entry("quantity", "0") + "]"), "items[0].price: must be greater than 0"},
	{"error in items before a later one", `{"items":[` + entry("quantity", "0") + `],"user_id":""}`, "items[0].quantity: must be between 1 and 1000000"},
	{"error before items wins", `{"user_id":"","items":[` + entry("quantity", "0") + `]}`, "user_id: must not be empty"},
	{"items does not excuse payment_details", line("item_id", "-", "quantity", "-", "price", "-", "payment_details", "-", "items", "["+entry()+"]"),
		"payment_details: missing"},
	{"total too large", withItems(func() string {
		var parts []string
		for i := range 93 {
			parts = append(parts, entry("item_id", `"i`+strconv.Itoa(i)+`"`, "quantity", "1000000", "price", `"1000000000.00"`))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}()), "items: total amount is more than 92233720368547758.07"},
}

func init() {
	for i := range decodeErrorTests {
		if decodeErrorTests[i].name == "duplicate transaction_id" {
			decodeErrorTests[i].line = strings.TrimSuffix(goodLine, "}") + `,"transaction_id":"t2"}`
			decodeErrorTests[i].err = "transaction_id: duplicate key"
		}
	}
}

func TestDecodeLineErrors(t *testing.T) {
	for _, tt := range decodeErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeLine([]byte(tt.line))
			if err == nil {
				t.Fatalf("DecodeLine(%s) = %+v, want error %q", tt.line, got, tt.err)
			}
			if err.Error() != tt.err {
				t.Fatalf("DecodeLine(%s)\nerror %q\n want %q", tt.line, err, tt.err)
			}
			var se *SyntaxError
			var fe *FieldError
			switch {
			case errors.As(err, &se):
				if !strings.HasPrefix(tt.err, "invalid JSON: ") {
					t.Errorf("a *SyntaxError for a field problem")
				}
				if se.Offset < 0 || se.Offset > len(tt.line) {
					t.Errorf("offset %d outside the line", se.Offset)
				}
			case errors.As(err, &fe):
			default:
				t.Errorf("error %T is neither a *SyntaxError nor a *FieldError", err)
			}
			if got.UserID != "" || got.ItemID != "" || got.Quantity != 0 || got.Price != 0 ||
				got.Amount != 0 || got.Card != (Card{}) || got.Items != nil {
				t.Errorf("on error, the request should be zero but for TxID: %+v", got)
			}
		})
	}
}

// TestDecodeLineTxIDOnError checks that a bad request still names its
// transaction when it can.
func TestDecodeLineTxIDOnError(t *testing.T) {
	tests := []struct{ line, txID string }{
		{line("price", `"9.999"`), "t1"},
		{`{"quantity":0,"transaction_id":"t9"}`, "t9"},                        // found after the error
		{line("transaction_id", `"t 1"`), ""},                                 // invalid id
		{strings.TrimSuffix(goodLine, "}"), ""},                               // not JSON
		{line("transaction_id", `"t1"`, "x", `[1,2`), ""},                     // not JSON
		{strings.TrimSuffix(goodLine, "}") + `,"transaction_id":"t2"}`, "t1"}, // the first one
	}
	for _, tt := range tests {
		got, err := DecodeLine([]byte(tt.line))
		if err == nil {
			t.Fatalf("DecodeLine(%s): no error", tt.line)
		}
		if got.TxID != tt.txID {
			t.Errorf("DecodeLine(%s): TxID %q, want %q (error %v)", tt.line, got.TxID, tt.txID, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, r := range []Request{goodRequest, goodMultiRequest} {
		if err := r.Validate(); err != nil {
			t.Fatalf("Validate(%+v): %v", r, err)
		}
	}
	// The single-item form: Items empty.
	singleForm := goodRequest
	singleForm.Items = nil
	tests := []struct {
		name   string
		change func(r *Request)
		err    string
	}{
		{"empty transaction_id", func(r *Request) { r.TxID = "" }, "transaction_id: must not be empty"},
		{"user_id with space", func(r *Request) { r.UserID = "a b" }, "user_id: contains whitespace or control characters"},
		{"item_id invalid UTF-8", func(r *Request) { r.ItemID = "i\xff" }, "item_id: invalid UTF-8"},
		{"item_id too long", func(r *Request) { r.ItemID = strings.Repeat("i", 129) }, "item_id: longer than 128 bytes"},
		{"quantity 0", func(r *Request) { r.Quantity, r.Amount = 0, 0 }, "quantity: must be between 1 and 1000000"},
		{"price 0", func(r *Request) { r.Price, r.Amount = 0, 0 }, "price: must be greater than 0"},
		{"price too large", func(r *Request) { r.Price = MaxPrice + 1; r.Amount = 2 * r.Price }, "price: must be at most 1000000000.00"},
		{"wrong amount", func(r *Request) { r.Amount++ }, "amount: must equal quantity × price"},
		{"no last4", func(r *Request) { r.Card.Last4 = "" }, "card.last4: must be 4 digits"},
		{"last4 letters", func(r *Request) { r.Card.Last4 = "11x1" }, "card.last4: must be 4 digits"},
		{"month 13", func(r *Request) { r.Card.ExpMonth = 13 }, "card.exp_month: must be between 1 and 12"},
		{"year 29", func(r *Request) { r.Card.ExpYear = 29 }, "card.exp_year: must be between 2000 and 2099"},
	}
	for _, tt := range tests {
		r := singleForm
		tt.change(&r)
		err := r.Validate()
		if err == nil || err.Error() != tt.err {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.err)
		}
	}

	// The items form; the lines are changed in a copy of Items.
	items := []struct {
		name   string
		change func(r *Request)
		err    string
	}{
		{"no items", func(r *Request) { r.Items = r.Items[:0] }, "item_id: must not be empty"},
		{"too many", func(r *Request) {
			r.Items = nil
			for i := range MaxItems + 1 {
				r.Items = append(r.Items, LineItem{"i" + strconv.Itoa(i), 1, 1})
			}
			r.Amount = MaxItems + 1
		}, "items: more than 100 entries"},
		{"empty item_id", func(r *Request) { r.Items[1].ItemID = "" }, "items[1].item_id: must not be empty"},
		{"item_id with space", func(r *Request) { r.Items[2].ItemID = "i 2" }, "items[2].item_id: contains whitespace or control characters"},
		{"quantity 0", func(r *Request) { r.Items[0].Quantity = 0 }, "items[0].quantity: must be between 1 and 1000000"},
		{"quantity too large", func(r *Request) { r.Items[2].Quantity = MaxQuantity + 1 }, "items[2].quantity: must be between 1 and 1000000"},
		{"price negative", func(r *Request) { r.Items[1].Price = -1 }, "items[1].price: must be greater than 0"},
		{"price too large", func(r *Request) { r.Items[1].Price = MaxPrice + 1 }, "items[1].price: must be at most 1000000000.00"},
		{"same item twice", func(r *Request) { r.Items[2].ItemID = "i2" }, "items[2].item_id: same as items[1].item_id"},
		{"wrong amount", func(r *Request) { r.Amount-- }, "amount: must equal the sum of quantity × price over items"},
		{"total too large", func(r *Request) {
			r.Items = nil
			for i := range 93 {
				r.Items = append(r.Items, LineItem{"i" + strconv.Itoa(i), MaxQuantity, MaxPrice})
			}
		}, "items: total amount is more than 92233720368547758.07"},
		{"item_id with several items", func(r *Request) { r.ItemID = "i1" },
			"items: disagrees with item_id, quantity and price, which must be zero or repeat its one entry"},
		{"single fields that differ from the one entry", func(r *Request) {
			r.Items, r.Amount = r.Items[:1], 1998
			r.ItemID, r.Quantity, r.Price = "i1", 2, 998
		}, "items: disagrees with item_id, quantity and price, which must be zero or repeat its one entry"},
	}
	for _, tt := range items {
		r := goodMultiRequest
		r.Items = append([]LineItem(nil), r.Items...)
		tt.change(&r)
		err := r.Validate()
		if err == nil || err.Error() != tt.err {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.err)
		}
	}
	// One entry, with or without the single-item fields repeating it.
	r := goodRequest
	r.ItemID, r.Quantity, r.Price = "", 0, 0
	if err := r.Validate(); err != nil {
		t.Errorf("one entry, no single-item fields: %v", err)
	}
}

// TestDecodeLineKeepsNoPAN checks that no part of the request holds the full
// card number or the CVV.
func TestDecodeLineKeepsNoPAN(t *testing.T) {
	r, err := DecodeLine([]byte(line("payment_details.card_number", `"5555 5555 5555 4444"`, "payment_details.cvv", `"987"`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{r.TxID, r.UserID, r.ItemID, r.Card.Last4} {
		if strings.Contains(s, "5555") || strings.Contains(s, "987") {
			t.Errorf("request keeps %q", s)
		}
	}
	if r.Card.Last4 != "4444" {
		t.Errorf("Last4 = %q", r.Card.Last4)
	}
}

func TestDecodeLineAllocs(t *testing.T) {
	data := []byte(goodLine)
	n := testing.AllocsPerRun(200, func() {
		if _, err := DecodeLine(data); err != nil {
			t.Fatal(err)
		}
	})
	if n > 2 {
		t.Errorf("DecodeLine allocates %v times per line, want at most 2 (the strings, Items)", n)
	}
	data = []byte(goodMultiLine)
	if n := testing.AllocsPerRun(200, func() { _, _ = DecodeLine(data) }); n > 3 {
		t.Errorf("DecodeLine of three items allocates %v times per line, want at most 3", n)
	}
}

func BenchmarkDecodeLine(b *testing.B) {
	data := []byte(goodLine)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeLine(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeLineItems(b *testing.B) {
	data := []byte(goodMultiLine)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeLine(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeLineError(b *testing.B) {
	data := []byte(line("price", `"9.999"`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeLine(data); err == nil {
			b.Fatal("no error")
		}
	}
}
