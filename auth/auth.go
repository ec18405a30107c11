// Package auth says who a caller is and what it may do.
//
// An identity is a role and a name, written as a URI: dtx://coordinator,
// dtx://participant/inventory, dtx://client/NAME, dtx://app/NAME,
// dtx://admin/NAME. With mutual TLS it comes from the peer's verified
// certificate (its URI SAN, or a CommonName in the same form), never from a
// field of a message; with HTTP bearer tokens, from the token file. What each
// role may do is one table (Allowed, AllowedMessage), checked at the edge of
// every server before a request or a message reaches the protocol machines.
//
// See docs/SECURITY.md for the threat model.
package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/dtx-dev/dtx/twopc"
)

// Role is what an identity is. The zero value is invalid: it is allowed
// nothing.
type Role uint8

const (
	// RoleCoordinator is the coordinator: it sends PREPARE, COMMIT and
	// ABORT to the participants.
	RoleCoordinator Role = 1 + iota
	// RoleParticipant is a service that holds a branch of transactions:
	// it votes, acknowledges, inquires and reports lock waits to the
	// coordinator, about its own branches only.
	RoleParticipant
	// RoleClient submits purchases (whole: a branch at every configured
	// participant, the same request each) and reads their outcomes.
	RoleClient
	// RoleApp is an application that also submits transactions over
	// branches of its own choosing (SubmitTx), for participants of its own.
	RoleApp
	// RoleAdmin is an operator: state, status, metrics, transport counters
	// and profiles; it may read outcomes, not submit.
	RoleAdmin
	roleEnd
)

var roleNames = [...]string{"", "coordinator", "participant", "client", "app", "admin"}

func (r Role) String() string {
	if r == 0 || r >= roleEnd {
		return fmt.Sprintf("Role(%d)", uint8(r))
	}
	return roleNames[r]
}

// Scheme is the URI scheme of identities.
const Scheme = "dtx"

// MaxNameBytes bounds the name of an identity.
const MaxNameBytes = 64

// Identity is who a peer is.
type Identity struct {
	Role Role
	// Name is the participant's node name (inventory, ...), the client's,
	// app's or admin's own name; empty for the coordinator.
	Name string
}

// Coordinator is the coordinator's identity.
var Coordinator = Identity{Role: RoleCoordinator}

// Participant returns the identity of the participant node name.
func Participant(name string) Identity { return Identity{Role: RoleParticipant, Name: name} }

// URI writes the identity as dtx://ROLE[/NAME].
func (id Identity) URI() string {
	if id.Role == RoleCoordinator {
		return Scheme + "://coordinator"
	}
	return Scheme + "://" + id.Role.String() + "/" + id.Name
}

func (id Identity) String() string { return id.URI() }

// Node returns the node name the identity speaks for on the transport:
// the coordinator's node name, a participant's name, "" for the others.
func (id Identity) Node() string {
	switch id.Role {
	case RoleCoordinator:
		return twopc.CoordinatorID
	case RoleParticipant:
		return id.Name
	}
	return ""
}

// ErrNoIdentity means a caller presented no identity at all.
var ErrNoIdentity = errors.New("auth: no identity (a client certificate or a bearer token is required)")

// ErrDenied is wrapped by every refusal of an authenticated caller.
var ErrDenied = errors.New("auth: permission denied")

// ParseURI reads dtx://coordinator, dtx://participant/NAME,
// dtx://client/NAME, dtx://app/NAME or dtx://admin/NAME.
func ParseURI(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return Identity{}, fmt.Errorf("auth: identity %q: want %s://ROLE/NAME", s, Scheme)
	}
	role, name, hasName := strings.Cut(rest, "/")
	var id Identity
	for r := Role(1); r < roleEnd; r++ {
		if roleNames[r] == role {
			id.Role = r
		}
	}
	switch {
	case id.Role == 0:
		return Identity{}, fmt.Errorf("auth: identity %q: unknown role %q (want coordinator, participant, client, app or admin)", s, role)
	case id.Role == RoleCoordinator:
		if hasName {
			return Identity{}, fmt.Errorf("auth: identity %q: the coordinator has no name", s)
		}
		return id, nil
	}
	if err := ValidName(name); err != nil {
		return Identity{}, fmt.Errorf("auth: identity %q: %w", s, err)
	}
	if id.Role == RoleParticipant && name == twopc.CoordinatorID {
		return Identity{}, fmt.Errorf("auth: identity %q: a participant cannot be named %s", s, twopc.CoordinatorID)
	}
	id.Name = name
	return id, nil
}

// ValidName checks an identity's name: 1 to MaxNameBytes bytes of letters,
// digits, '-', '_' and '.'.
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameBytes {
		return fmt.Errorf("name must be 1 to %d bytes", MaxNameBytes)
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// FromCert reads the identity of a verified certificate: its first URI SAN
// with the dtx scheme, or else its CommonName if that is a dtx URI. A
// certificate with two different dtx identities is refused.
func FromCert(c *x509.Certificate) (Identity, error) {
	var found *Identity
	for _, u := range c.URIs {
		if u.Scheme != Scheme {
			continue
		}
		id, err := ParseURI(u.String())
		if err != nil {
			return Identity{}, err
		}
		if found != nil && *found != id {
			return Identity{}, fmt.Errorf("auth: certificate %q names two identities (%s, %s)", c.Subject.CommonName, *found, id)
		}
		found = &id
	}
	if found != nil {
		return *found, nil
	}
	if strings.HasPrefix(c.Subject.CommonName, Scheme+"://") {
		return ParseURI(c.Subject.CommonName)
	}
	return Identity{}, fmt.Errorf("auth: certificate %q has no %s:// identity (URI SAN or CommonName)", c.Subject.CommonName, Scheme)
}

// IdentityURL returns id as a URL, for a certificate's URI SANs.
func IdentityURL(id Identity) *url.URL {
	u, err := url.Parse(id.URI())
	if err != nil {
		panic(fmt.Sprintf("auth: identity %s does not parse as a URL: %v", id, err))
	}
	return u
}

// FromGRPC returns the identity of a gRPC call's peer, from its verified
// certificate. ok is false for a call without TLS; err is set for a TLS
// peer whose certificate names no valid identity.
func FromGRPC(ctx context.Context) (id Identity, ok bool, err error) {
	p, found := peer.FromContext(ctx)
	if !found || p.AuthInfo == nil {
		return Identity{}, false, nil
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS {
		return Identity{}, false, nil
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Identity{}, true, ErrNoIdentity
	}
	id, err = FromCert(chains[0][0])
	return id, true, err
}

// FromHTTPS returns the identity of an HTTPS request's verified client
// certificate; ok is false if it presented none.
func FromHTTPS(r *http.Request) (id Identity, ok bool, err error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return Identity{}, false, nil
	}
	id, err = FromCert(r.TLS.VerifiedChains[0][0])
	return id, true, err
}

// Action is something a caller asks of a server.
type Action uint8

const (
	// ActSubmit: Submit, SubmitStream, POST /v1/purchases.
	ActSubmit Action = 1 + iota
	// ActSubmitTx: SubmitTx, a transaction over arbitrary branches.
	ActSubmitTx
	// ActOutcome: Outcome, GET /v1/transactions/{id}.
	ActOutcome
	// ActOperate: state, status, metrics, transport counters, profiles.
	ActOperate
	// ActDeliver: the transport (Deliver, DeliverStream); each message is
	// then checked on its own (AllowedMessage).
	ActDeliver
	// ActAdmin: the admin API (server/admin.go): transactions in flight
	// and in doubt, timelines, the wait-for graph, and the actions that
	// change things (resend now, decide an in-doubt branch by hand).
	ActAdmin
	// ActRecords: Transport.Records, a component's log records about one
	// transaction, which the coordinator gathers for a timeline.
	ActRecords
	// ActReplicate: raft messages between the replicas of a replicated
	// coordinator (Raft/Send): the coordinator identity only.
	ActReplicate
	actionEnd
)

var actionNames = [...]string{"", "submit", "submit-tx", "outcome", "operate", "deliver", "admin", "records", "replicate"}

func (a Action) String() string {
	if a == 0 || a >= actionEnd {
		return fmt.Sprintf("Action(%d)", uint8(a))
	}
	return actionNames[a]
}

// actions is the authorization table: role × action → allowed.
var actions = [roleEnd][actionEnd]bool{
	RoleCoordinator: {ActDeliver: true, ActRecords: true, ActReplicate: true},
	RoleParticipant: {ActDeliver: true},
	RoleClient:      {ActSubmit: true, ActOutcome: true},
	RoleApp:         {ActSubmit: true, ActSubmitTx: true, ActOutcome: true},
	RoleAdmin:       {ActOutcome: true, ActOperate: true, ActAdmin: true},
}

// Allowed reports whether id may do a.
func Allowed(id Identity, a Action) error {
	if id.Role == 0 || id.Role >= roleEnd || a == 0 || a >= actionEnd || !actions[id.Role][a] {
		return fmt.Errorf("%w: %s may not %s", ErrDenied, id, a)
	}
	return nil
}

// messages is the authorization table of protocol messages: the sender's
// role × message type → allowed. A coordinator's messages go to
// participants, a participant's to the coordinator.
var messages = [roleEnd][]twopc.MsgType{
	RoleCoordinator: {twopc.MsgPrepare, twopc.MsgCommit, twopc.MsgAbort},
	RoleParticipant: {twopc.MsgVote, twopc.MsgAck, twopc.MsgInquire, twopc.MsgWaits, twopc.MsgWound, twopc.MsgRestarted},
}

// AllowedMessage reports whether sender may send m to the node self: the
// message must name sender as its From and self as its To, its type must be
// one sender's role sends, and it must go from the coordinator to a
// participant or back. A participant's message to the coordinator is
// further checked by the coordinator machine against the transaction's
// branches (a participant speaks only of its own branches).
func AllowedMessage(sender Identity, self string, m *twopc.Message) error {
	node := sender.Node()
	switch {
	case node == "":
		return fmt.Errorf("%w: %s sends no protocol messages", ErrDenied, sender)
	case m.From != node:
		return fmt.Errorf("%w: %s sent a %s that claims to be from %q", ErrDenied, sender, m.Type, trunc(m.From))
	case m.To != self:
		return fmt.Errorf("%w: %s from %s is for %q, not %s", ErrDenied, m.Type, sender, trunc(m.To), self)
	case (self == twopc.CoordinatorID) == (sender.Role == RoleCoordinator):
		return fmt.Errorf("%w: %s may not send to %s", ErrDenied, sender, self)
	}
	for _, t := range messages[sender.Role] {
		if t == m.Type {
			return nil
		}
	}
	return fmt.Errorf("%w: %s may not send %s", ErrDenied, sender, m.Type)
}

// ClaimedIdentity is the identity a message claims by its From, for a
// deployment without TLS (which authenticates nobody, and is only run when
// asked for): the role table still holds, the name is taken on trust.
func ClaimedIdentity(m *twopc.Message) Identity {
	if m.From == twopc.CoordinatorID {
		return Coordinator
	}
	return Participant(m.From)
}

// ExpectServer returns a copy of a client TLS configuration that accepts
// only a server whose certificate names identity want: a process holding
// some other certificate of the same CA cannot stand in for the server.
func ExpectServer(base *tls.Config, want Identity) *tls.Config {
	c := base.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("auth: the server presented no certificate")
		}
		id, err := FromCert(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("auth: the server is %s, want %s", id, want)
		}
		return nil
	}
	return c
}

// trunc shortens an untrusted string for an error message.
func trunc(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}
