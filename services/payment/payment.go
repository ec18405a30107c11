// Package payment is the example payment service: a branch holds the amount
// on the buyer's account at PREPARE, captures it at COMMIT and releases it
// at ABORT. Money is conserved: sum of balances + held + captured equals
// the sum of the initial balances, at all times.
package payment

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// ID is the service's node name.
const ID = "payment"

// Account is one buyer's money.
type Account struct {
	Initial  money.Cents `json:"initial"`
	Balance  money.Cents `json:"balance"`  // free to spend
	Held     money.Cents `json:"held"`     // held by prepared branches
	Captured money.Cents `json:"captured"` // taken by committed branches
}

// Charge is one committed (or prepared) branch.
type Charge struct {
	UserID string      `json:"user_id"`
	Amount money.Cents `json:"amount"`
	Card   string      `json:"card,omitempty"` // last four digits
}

// Store is the payment service's state. It implements twopc.Resource.
type Store struct {
	accounts map[string]*Account
	held     map[string]Charge
	charges  *ledger.Book[capture] // committed, in commit order
	year     int
	month    int
	ops      purchase.BinaryCache // the last operation decoded
}

var _ twopc.Resource = (*Store)(nil)

// New returns a store with the world's initial balances. Cards that expire
// before today's month are declined.
func New(w purchase.World, today time.Time) *Store {
	s := &Store{
		accounts: make(map[string]*Account, len(w.Accounts)),
		held:     make(map[string]Charge),
		charges:  ledger.NewBook(encodeCapture, decodeCapture),
		year:     today.Year(),
		month:    int(today.Month()),
	}
	for id, a := range w.Accounts {
		s.accounts[id] = &Account{Initial: a.Balance, Balance: a.Balance}
	}
	return s
}

// decode reads an operation; Keys and then Prepare of one branch decode
// it once.
func (s *Store) decode(op []byte) (purchase.Request, error) {
	r, err := s.ops.Decode(op)
	if err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the buyer's account.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	r, err := s.decode(op)
	if err != nil {
		return nil, err
	}
	return []string{"account:" + r.UserID}, nil
}

// Prepare holds the amount, the order's total over all its items, if the
// card is valid and the balance covers it.
func (s *Store) Prepare(tx string, op []byte) error {
	r, err := s.decode(op)
	if err != nil {
		return err
	}
	a := s.accounts[r.UserID]
	switch {
	case a == nil:
		return fmt.Errorf("unknown account %s", r.UserID)
	case r.Card.ExpYear < s.year || (r.Card.ExpYear == s.year && r.Card.ExpMonth < s.month):
		return fmt.Errorf("card ending %s expired %02d/%02d", r.Card.Last4, r.Card.ExpMonth, r.Card.ExpYear%100)
	case r.Amount <= 0:
		return fmt.Errorf("invalid amount %s", r.Amount)
	case a.Balance < r.Amount:
		return fmt.Errorf("insufficient funds for %s: balance %s, amount %s", r.UserID, a.Balance, r.Amount)
	}
	a.Balance -= r.Amount
	a.Held += r.Amount
	s.held[tx] = Charge{UserID: r.UserID, Amount: r.Amount, Card: r.Card.Last4}
	return nil
}

// Commit captures the held amount.
func (s *Store) Commit(tx string, _ []byte) {
	c, ok := s.held[tx]
	if !ok {
		panic("payment: commit of an unprepared branch " + tx) // twopc guarantees it
	}
	a := s.accounts[c.UserID]
	a.Held -= c.Amount
	a.Captured += c.Amount
	delete(s.held, tx)
	s.charges.Append(capture{tx, c})
}

// capture is a committed branch's charge.
type capture struct {
	tx string
	c  Charge
}

// chargesByTx returns the committed charges by transaction, or an error
// naming a transaction committed twice. It reads the whole ledger (file
// and memory): for Check and State only.
func (s *Store) chargesByTx() (map[string]Charge, error) {
	m := make(map[string]Charge, s.charges.Len())
	err := s.charges.Each(func(x capture) error {
		if _, dup := m[x.tx]; dup {
			return fmt.Errorf("payment: %s committed twice", x.tx)
		}
		m[x.tx] = x.c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// encodeCapture and decodeCapture are a charge's form in the ledger file:
// the transaction id, the buyer, the amount and the card's last digits.
func encodeCapture(b []byte, x capture) []byte {
	b = ledger.AppendString(b, x.tx)
	b = ledger.AppendString(b, x.c.UserID)
	b = binary.AppendVarint(b, int64(x.c.Amount))
	return ledger.AppendString(b, x.c.Card)
}

func decodeCapture(p []byte) (capture, error) {
	r := ledger.Reader{B: p}
	x := capture{tx: r.String()}
	x.c.UserID = r.String()
	x.c.Amount = money.Cents(r.Varint())
	x.c.Card = r.String()
	return x, r.Done()
}

// Abort releases the held amount.
func (s *Store) Abort(tx string, _ []byte) {
	c, ok := s.held[tx]
	if !ok {
		return
	}
	a := s.accounts[c.UserID]
	a.Held -= c.Amount
	a.Balance += c.Amount
	delete(s.held, tx)
}

// State is the payment service's state as JSON.
type State struct {
	Accounts map[string]Account `json:"accounts"`
	Charges  map[string]Charge  `json:"charges"` // committed
	Held     map[string]Charge  `json:"held,omitempty"`
	// LedgerError says why the ledger file could not be read whole
	// (Charges then hold what was read before the error).
	LedgerError string `json:"ledger_error,omitempty"`
}

// State returns a copy of the state.
func (s *Store) State() State {
	st := State{
		Accounts: make(map[string]Account, len(s.accounts)),
		Charges:  make(map[string]Charge, s.charges.Len()),
		Held:     maps.Clone(s.held),
	}
	for id, a := range s.accounts {
		st.Accounts[id] = *a
	}
	if err := s.charges.Each(func(x capture) error { st.Charges[x.tx] = x.c; return nil }); err != nil {
		st.LedgerError = err.Error()
	}
	return st
}

// Check verifies, per account, balance + held + captured == initial, with
// nothing negative, and that holds and charges add up.
func (s *Store) Check() error {
	held := map[string]money.Cents{}
	captured := map[string]money.Cents{}
	for _, c := range s.held {
		held[c.UserID] += c.Amount
	}
	charges, err := s.chargesByTx()
	if err != nil {
		return err
	}
	for _, c := range charges {
		captured[c.UserID] += c.Amount
	}
	for _, id := range slices.Sorted(maps.Keys(s.accounts)) {
		a := s.accounts[id]
		switch {
		case a.Balance < 0 || a.Held < 0 || a.Captured < 0:
			return fmt.Errorf("payment: account %s has a negative amount: %+v", id, *a)
		case a.Balance+a.Held+a.Captured != a.Initial:
			return fmt.Errorf("payment: account %s does not add up: %+v", id, *a)
		case a.Held != held[id] || a.Captured != captured[id]:
			return fmt.Errorf("payment: account %s: held %s/captured %s but branches say %s/%s", id, a.Held, a.Captured, held[id], captured[id])
		}
	}
	return nil
}
