package purchase_test

import (
	"fmt"
	"strings"

	"github.com/dtx-dev/dtx/purchase"
)

func ExampleDecodeLine() {
	req, err := purchase.DecodeLine([]byte(`{"transaction_id":"t1","user_id":"u1","item_id":"i1","quantity":2,"price":"9.99",` +
		`"payment_details":{"card_number":"4111 1111 1111 1111","expiry":"12/29","cvv":"123"}}`))
	fmt.Printf("%s %s %s %d × %v = %v, card …%s %d/%d, %v\n", req.TxID, req.UserID, req.ItemID,
		req.Quantity, req.Price, req.Amount, req.Card.Last4, req.Card.ExpMonth, req.Card.ExpYear, err)

	req, err = purchase.DecodeLine([]byte(`{"transaction_id":"t2","price":"9.999"}`))
	fmt.Printf("%q: %v\n", req.TxID, err)
	// Output:
	// t1 u1 i1 2 × 9.99 = 19.98, card …1111 12/2029, <nil>
	// "t2": price: more than two decimal places
}

func ExampleReader() {
	input := `{"transaction_id":"t1","user_id":"u1","item_id":"i1","quantity":1,"price":5,"payment_details":{"card_number":"4111111111111111","expiry":"01/30","cvv":"123"}}

{"transaction_id":"t2","user_id":"u1","item_id":"i1","quantity":0}
{"transaction_id":"t3",
`
	r := purchase.NewReader(strings.NewReader(input))
	for r.Scan() {
		l := r.Line()
		if l.Err != nil {
			fmt.Printf("line %d: %v\n", l.No, l.Err)
			continue
		}
		fmt.Printf("line %d: %s pays %v\n", l.No, l.Req.TxID, l.Req.Amount)
	}
	if err := r.Err(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// line 1: t1 pays 5.00
	// line 3: quantity: must be between 1 and 1000000
	// line 4: invalid JSON: unexpected end of input at offset 23
}
