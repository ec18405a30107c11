package money_test

import (
	"encoding/json"
	"fmt"

	"github.com/dtx-dev/dtx/money"
)

func ExampleParse() {
	price, err := money.Parse("9.99")
	fmt.Println(price, err)
	total, err := money.Mul(price, 3)
	fmt.Println(total, err)
	_, err = money.Parse("1.234")
	fmt.Println(err)
	// Output:
	// 9.99 <nil>
	// 29.97 <nil>
	// money: invalid amount "1.234": more than two decimal places
}

func ExampleCents_UnmarshalJSON() {
	var v struct {
		Price   money.Cents `json:"price"`
		Balance money.Cents `json:"balance"`
	}
	err := json.Unmarshal([]byte(`{"price": 0.1, "balance": "450.05"}`), &v)
	fmt.Println(v.Price, v.Balance, err)
	out, _ := json.Marshal(v)
	fmt.Println(string(out))
	// Output:
	// 0.10 450.05 <nil>
	// {"price":"0.10","balance":"450.05"}
}
