// Package purchase holds the input formats of `dtx run`: the purchase
// requests (JSON Lines), their compact binary form (the business operation
// inside a 2PC PREPARE), and the world file (the starting stock and
// balances). It also generates request streams for benchmarks and examples.
//
// # Requests
//
// One request a line:
//
//	{"transaction_id":"t1","user_id":"u1","item_id":"i1","quantity":2,"price":"9.99",
//	 "payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}
//
// or, for an order of several items, bought all together or not at all,
// items in place of item_id, quantity and price:
//
//	{"transaction_id":"t2","user_id":"u1","items":[{"item_id":"i1","quantity":2,"price":"9.99"},
//	 {"item_id":"i2","quantity":1,"price":"0.50"}],"payment_details":{...}}
//
// The rules, each checked by DecodeLine with the reason it reports:
//
//   - The line is one JSON object (RFC 8259), and nothing else but
//     whitespace. Stricter than encoding/json: invalid UTF-8 and \u escapes
//     of lone surrogates are refused, and values nest at most 64 deep. A
//     syntax error is a *SyntaxError: "invalid JSON: unexpected end of input
//     at offset 42". Any other JSON value is "expected a JSON object, got
//     array".
//   - Keys match exactly (no case folding) after unescaping. A known key
//     that appears twice is "duplicate key". Unknown keys are ignored, at the
//     top and inside payment_details.
//   - transaction_id, user_id, item_id: JSON strings ("must be a string, got
//     number"), not empty ("must not be empty"), at most 128 bytes ("longer
//     than 128 bytes"), without whitespace, control or format characters
//     ("contains whitespace or control characters"), since the output prints
//     ids on one line.
//   - quantity: a JSON integer literal from 1 to 1000000. A string ("must be
//     an integer, got string"), a fraction or an exponent, even 2.0 or 2e0
//     ("must be an integer"), and anything out of range ("must be between 1
//     and 1000000") are refused.
//   - price: per item, a JSON number or string in the text form of package
//     money, parsed from its text, never through a float: at most two
//     decimals ("more than two decimal places"), no exponent ("exponent
//     notation not allowed"), greater than 0 ("must be greater than 0"), at
//     most 1000000000.00 ("must be at most 1000000000.00"). Within these
//     limits quantity × price cannot overflow.
//   - items: instead of item_id, quantity and price, a JSON array ("must be
//     an array, got object") of 1 to 100 entries ("must not be empty",
//     "more than 100 entries"). Each entry is an object ("items[1]: must be
//     an object, got string") with item_id, quantity and price, under the
//     rules above and named by their place: "items[2].price: more than two
//     decimal places", "items[0].quantity: missing". Unknown keys in an
//     entry are ignored. An item may appear once per order
//     ("items[3].item_id: same as items[1].item_id"): a repeated item is
//     refused rather than merged, since its lines could disagree on the
//     price. A line with both forms is refused at the second one, e.g.
//     "items: cannot be given with item_id" or "price: cannot be given with
//     items"; a line with neither gets the "missing" errors of item_id,
//     quantity and price. The total, the sum of quantity × price, must not
//     overflow ("items: total amount is more than 92233720368547758.07");
//     only orders of more than 92 lines at the limits come near.
//     The entries keep their order: it is the order in which the inventory
//     locks the items.
//   - payment_details: an object ("must be an object, got string") with
//     card_number (a string of 12 to 19 digits, with spaces or dashes
//     anywhere as separators, passing the Luhn check: "fails the Luhn
//     check"), expiry ("MM/YY", month 01 to 12; the year is 20YY) and cvv (3
//     or 4 digits). Every one is a JSON string. The expiry is not compared
//     with today's date: the payment service decides that, with its own
//     clock.
//   - A field that is absent is "missing". The null value is refused like
//     any value of the wrong type ("must be a string, got null").
//
// The errors of a field are *FieldError values that print as
// "<field>: <reason>", e.g. "price: more than two decimal places" or
// "payment_details.card_number: fails the Luhn check". A syntax error
// anywhere in the line wins over a field error; among field errors, the
// first in the line wins; missing fields come last, in the order above.
//
// A decoded Request is normalized: Items holds the lines, whichever form
// the line used, and ItemID, Quantity and Price repeat the line when there
// is exactly one (see Request).
//
// Of the payment details, dtx keeps the card's last four digits and expiry
// (Card). The full card number and the CVV are checked, then dropped: they
// are never stored, logged or sent.
//
// Reader reads a stream of lines: blank lines are skipped, each other line
// comes with its number and its request or error, a too long line is an
// error for that line only, and the stream goes on.
//
// # Errors
//
// Errors about the input are meant for the person who wrote it: they carry no
// package prefix and name the field and the offset. Errors about the
// program's own use of the package (bad options, corrupt binary data) start
// with "purchase: ".
package purchase
