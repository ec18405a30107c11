package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/dtx-dev/dtx/twopc"
)

func TestParseURI(t *testing.T) {
	long := strings.Repeat("n", MaxNameBytes)
	good := []struct {
		in   string
		want Identity
	}{
		{"dtx://coordinator", Coordinator},
		{"dtx://participant/inventory", Participant("inventory")},
		{"dtx://participant/order-2.eu_west", Participant("order-2.eu_west")},
		{"dtx://client/web", Identity{Role: RoleClient, Name: "web"}},
		{"dtx://app/shop", Identity{Role: RoleApp, Name: "shop"}},
		{"dtx://admin/oncall", Identity{Role: RoleAdmin, Name: "oncall"}},
		{"dtx://client/" + long, Identity{Role: RoleClient, Name: long}},
	}
	for _, c := range good {
		got, err := ParseURI(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseURI(%q) = %v, %v; want %v", c.in, got, err, c.want)
			continue
		}
		// The URI form of an identity reads back as the same identity.
		if again, err := ParseURI(got.URI()); err != nil || again != got || got.URI() != c.in {
			t.Errorf("%q: URI() = %q reads back as %v, %v", c.in, got.URI(), again, err)
		}
		if u := IdentityURL(got); u.String() != c.in {
			t.Errorf("IdentityURL(%v) = %q", got, u)
		}
	}
	bad := []string{
		"",
		"coordinator",
		"dtx:coordinator",
		"dtx:/coordinator",
		"https://coordinator",
		"DTX://coordinator",
		"spiffe://participant/inventory",
		" dtx://coordinator",
		"dtx://",
		"dtx:///inventory",
		"dtx://root/x",
		"dtx://Coordinator",
		"dtx://participants/inventory",
		// the coordinator has no name
		"dtx://coordinator/x",
		"dtx://coordinator/",
		"dtx://coordinator/coordinator",
		// a participant cannot be named coordinator (it would speak for it)
		"dtx://participant/coordinator",
		// names: 1 to MaxNameBytes of [A-Za-z0-9._-]
		"dtx://participant",
		"dtx://participant/",
		"dtx://client/",
		"dtx://client/" + long + "n",
		"dtx://client/a/b",
		"dtx://client/a b",
		"dtx://client/a\x00",
		"dtx://client/a\n",
		"dtx://client/é",
		"dtx://client/a%20b",
		"dtx://client/a?x=1",
		"dtx://client/a#frag",
		"dtx://client/a@b",
		"dtx://admin/a:b",
		"dtx://app/*",
	}
	for _, s := range bad {
		if id, err := ParseURI(s); err == nil {
			t.Errorf("ParseURI(%q) = %v; want an error", s, id)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"a", "A9", "inventory", "a-b_c.d", strings.Repeat("x", MaxNameBytes)} {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", strings.Repeat("x", MaxNameBytes+1), "a/b", "a b", "ä", "a\x7f", "a+b", "a%b"} {
		if ValidName(n) == nil {
			t.Errorf("ValidName(%q) accepted", n)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestFromCert(t *testing.T) {
	cert := func(cn string, uris ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		for _, u := range uris {
			c.URIs = append(c.URIs, mustURL(t, u))
		}
		return c
	}
	good := []struct {
		name string
		c    *x509.Certificate
		want Identity
	}{
		{"URI SAN", cert("", "dtx://participant/inventory"), Participant("inventory")},
		{"URI SAN of the coordinator", cert("whatever", "dtx://coordinator"), Coordinator},
		{"URI SAN wins over the CommonName", cert("dtx://coordinator", "dtx://client/web"), Identity{Role: RoleClient, Name: "web"}},
		{"other schemes are skipped", cert("", "https://example.com/x", "spiffe://td/ns/x", "dtx://admin/ops"), Identity{Role: RoleAdmin, Name: "ops"}},
		{"the same identity twice", cert("", "dtx://app/shop", "dtx://app/shop"), Identity{Role: RoleApp, Name: "shop"}},
		{"CommonName fallback", cert("dtx://participant/order"), Participant("order")},
		{"CommonName fallback past a foreign URI", cert("dtx://client/cli", "https://example.com"), Identity{Role: RoleClient, Name: "cli"}},
	}
	for _, c := range good {
		got, err := FromCert(c.c)
		if err != nil || got != c.want {
			t.Errorf("%s: FromCert = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	bad := []struct {
		name string
		c    *x509.Certificate
	}{
		{"two different identities", cert("", "dtx://participant/inventory", "dtx://coordinator")},
		{"two different names", cert("", "dtx://client/a", "dtx://client/b")},
		{"two identities, the same name", cert("", "dtx://client/a", "dtx://admin/a")},
		{"a bad dtx URI SAN", cert("dtx://client/ok", "dtx://participant/coordinator")},
		{"a bad dtx URI SAN after a good one", cert("", "dtx://client/ok", "dtx://root/x")},
		{"no identity", cert("inventory")},
		{"no identity, foreign URI", cert("", "https://example.com/dtx://coordinator")},
		{"empty", cert("")},
		{"a bad CommonName", cert("dtx://coordinator/x")},
		{"a CommonName that only looks alike", cert("DTX://coordinator")},
	}
	for _, c := range bad {
		if id, err := FromCert(c.c); err == nil {
			t.Errorf("%s: FromCert = %v; want an error", c.name, id)
		}
	}
}

// plainInfo is the AuthInfo of a connection without TLS.
type plainInfo struct{ credentials.CommonAuthInfo }

func (plainInfo) AuthType() string { return "insecure" }

func TestFromGRPC(t *testing.T) {
	leaf := &x509.Certificate{URIs: []*url.URL{mustURL(t, "dtx://participant/inventory")}}
	withPeer := func(ai credentials.AuthInfo) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: ai})
	}
	cases := []struct {
		name  string
		ctx   context.Context
		id    Identity
		isTLS bool
		err   bool
	}{
		{"no peer", context.Background(), Identity{}, false, false},
		{"no auth info", withPeer(nil), Identity{}, false, false},
		{"plaintext", withPeer(plainInfo{}), Identity{}, false, false},
		{"TLS without a verified chain", withPeer(credentials.TLSInfo{}), Identity{}, true, true},
		{"TLS with an empty chain", withPeer(credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}}), Identity{}, true, true},
		{"TLS with a certificate without identity", withPeer(credentials.TLSInfo{State: tls.ConnectionState{
			VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: "x"}}}}}}), Identity{}, true, true},
		{"TLS", withPeer(credentials.TLSInfo{State: tls.ConnectionState{
			// Only the verified chain counts, not what the peer sent.
			PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{mustURL(t, "dtx://coordinator")}}},
			VerifiedChains:   [][]*x509.Certificate{{leaf}}}}), Participant("inventory"), true, false},
	}
	for _, c := range cases {
		id, isTLS, err := FromGRPC(c.ctx)
		if id != c.id || isTLS != c.isTLS || (err != nil) != c.err {
			t.Errorf("%s: FromGRPC = %v, %v, %v", c.name, id, isTLS, err)
		}
	}
}

func TestFromHTTPS(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	if _, ok, err := FromHTTPS(r); ok || err != nil {
		t.Fatalf("plain HTTP: ok=%v err=%v", ok, err)
	}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{mustURL(t, "dtx://admin/a")}}}}
	if _, ok, err := FromHTTPS(r); ok || err != nil {
		t.Fatalf("an unverified certificate counts for nothing: ok=%v err=%v", ok, err)
	}
	r.TLS.VerifiedChains = [][]*x509.Certificate{{{URIs: []*url.URL{mustURL(t, "dtx://admin/a")}}}}
	if id, ok, err := FromHTTPS(r); !ok || err != nil || id != (Identity{Role: RoleAdmin, Name: "a"}) {
		t.Fatalf("verified: %v %v %v", id, ok, err)
	}
	r.TLS.VerifiedChains = [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: "nobody"}}}}
	if _, ok, err := FromHTTPS(r); !ok || err == nil {
		t.Fatalf("a verified certificate without identity: ok=%v err=%v", ok, err)
	}
}

// TestAllowed compares the whole role × action table, and the values just
// outside it, with this explicit copy: a change to the table must change
// this test.
func TestAllowed(t *testing.T) {
	want := map[Role][]Action{
		RoleCoordinator: {ActDeliver, ActRecords, ActReplicate},
		RoleParticipant: {ActDeliver},
		RoleClient:      {ActSubmit, ActOutcome},
		RoleApp:         {ActSubmit, ActSubmitTx, ActOutcome},
		RoleAdmin:       {ActOutcome, ActOperate, ActAdmin},
	}
	for r := Role(0); r <= roleEnd+1; r++ {
		for a := Action(0); a <= actionEnd+1; a++ {
			id := Identity{Role: r, Name: "x"}
			if r == RoleCoordinator {
				id.Name = ""
			}
			err := Allowed(id, a)
			if ok := slices.Contains(want[r], a); ok != (err == nil) {
				t.Errorf("Allowed(%s, %s) = %v; want allowed=%v", r, a, err, ok)
			}
			if err != nil && !errors.Is(err, ErrDenied) {
				t.Errorf("Allowed(%s, %s): %v does not wrap ErrDenied", r, a, err)
			}
		}
	}
	if roleEnd != 6 || actionEnd != 9 {
		t.Fatalf("a role or an action was added (roles %d, actions %d): extend this test", roleEnd-1, actionEnd-1)
	}
	if Allowed(Identity{}, ActOutcome) == nil {
		t.Fatal("the zero identity is allowed something")
	}
}

var allMsgTypes = []twopc.MsgType{
	twopc.MsgPrepare, twopc.MsgVote, twopc.MsgCommit, twopc.MsgAbort, twopc.MsgAck,
	twopc.MsgInquire, twopc.MsgWaits, twopc.MsgWound, twopc.MsgRestarted,
}

// TestAllowedMessage checks every role × every message type × both
// directions against an explicit table.
func TestAllowedMessage(t *testing.T) {
	if n := len(allMsgTypes); twopc.MsgType(n+1).String() != "MsgType(10)" || strings.HasPrefix(twopc.MsgType(n).String(), "MsgType(") {
		t.Fatalf("twopc has a new message type: extend this test")
	}
	const part = "inventory"
	toParticipant := []twopc.MsgType{twopc.MsgPrepare, twopc.MsgCommit, twopc.MsgAbort}
	toCoordinator := []twopc.MsgType{twopc.MsgVote, twopc.MsgAck, twopc.MsgInquire, twopc.MsgWaits, twopc.MsgWound, twopc.MsgRestarted}
	senders := []Identity{
		{},
		Coordinator,
		Participant("order"), // to a participant: another participant
		Participant(part),    // to the coordinator
		{Role: RoleClient, Name: "web"},
		{Role: RoleApp, Name: "shop"},
		{Role: RoleAdmin, Name: "ops"},
		{Role: roleEnd, Name: "x"},
	}
	types := append([]twopc.MsgType{0, 200}, allMsgTypes...)
	for _, self := range []string{twopc.CoordinatorID, part} {
		for _, s := range senders {
			for _, typ := range types {
				from := s.Node()
				if from == "" {
					from = s.Name // what a client might claim
				}
				m := &twopc.Message{Type: typ, From: from, To: self, Tx: "t1"}
				var want bool
				switch {
				case s.Role == RoleCoordinator && self == part:
					want = slices.Contains(toParticipant, typ)
				case s.Role == RoleParticipant && self == twopc.CoordinatorID:
					want = slices.Contains(toCoordinator, typ)
				}
				err := AllowedMessage(s, self, m)
				if (err == nil) != want {
					t.Errorf("%s sends %s to %s: %v; want allowed=%v", s, typ, self, err, want)
				}
				if err != nil && !errors.Is(err, ErrDenied) {
					t.Errorf("%s sends %s to %s: %v does not wrap ErrDenied", s, typ, self, err)
				}
			}
		}
	}
}

// TestAllowedMessageBinding: a message names its sender as From and this
// node as To, or it is refused, whatever its type.
func TestAllowedMessageBinding(t *testing.T) {
	long := strings.Repeat("é", 100)
	cases := []struct {
		name   string
		sender Identity
		self   string
		m      twopc.Message
	}{
		{"coordinator claims a participant's From", Coordinator, "inventory",
			twopc.Message{Type: twopc.MsgPrepare, From: "inventory", To: "inventory"}},
		{"coordinator's message for another participant", Coordinator, "inventory",
			twopc.Message{Type: twopc.MsgCommit, From: twopc.CoordinatorID, To: "order"}},
		{"coordinator's message without To", Coordinator, "inventory",
			twopc.Message{Type: twopc.MsgAbort, From: twopc.CoordinatorID}},
		{"participant claims the coordinator's From", Participant("order"), "inventory",
			twopc.Message{Type: twopc.MsgCommit, From: twopc.CoordinatorID, To: "inventory"}},
		{"participant claims another participant's From", Participant("order"), twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgVote, From: "inventory", To: twopc.CoordinatorID}},
		{"participant's message for a participant", Participant("order"), twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgVote, From: "order", To: "inventory"}},
		{"participant's message to itself", Participant("order"), "order",
			twopc.Message{Type: twopc.MsgVote, From: "order", To: "order"}},
		{"coordinator to itself", Coordinator, twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgPrepare, From: twopc.CoordinatorID, To: twopc.CoordinatorID}},
		{"empty From", Participant("order"), twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgAck, To: twopc.CoordinatorID}},
		{"long From", Participant("order"), twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgAck, From: long, To: twopc.CoordinatorID}},
		{"long To", Participant("order"), twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgAck, From: "order", To: long}},
		{"a client claims a participant", Identity{Role: RoleClient, Name: "order"}, twopc.CoordinatorID,
			twopc.Message{Type: twopc.MsgVote, From: "order", To: twopc.CoordinatorID}},
		{"an admin claims the coordinator", Identity{Role: RoleAdmin, Name: "coordinator"}, "inventory",
			twopc.Message{Type: twopc.MsgCommit, From: twopc.CoordinatorID, To: "inventory"}},
	}
	for _, c := range cases {
		err := AllowedMessage(c.sender, c.self, &c.m)
		if err == nil || !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v; want ErrDenied", c.name, err)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("%s: an untrusted field is not shortened in the error: %d bytes", c.name, len(err.Error()))
		}
	}
}

func TestClaimedIdentity(t *testing.T) {
	if id := ClaimedIdentity(&twopc.Message{From: twopc.CoordinatorID}); id != Coordinator {
		t.Errorf("coordinator: %v", id)
	}
	if id := ClaimedIdentity(&twopc.Message{From: "inventory"}); id != Participant("inventory") {
		t.Errorf("participant: %v", id)
	}
	// A claimed empty name speaks for no node.
	if err := AllowedMessage(ClaimedIdentity(&twopc.Message{}), twopc.CoordinatorID, &twopc.Message{Type: twopc.MsgVote, To: twopc.CoordinatorID}); err == nil {
		t.Error("a message without From is allowed in plaintext mode")
	}
}

func TestRoleActionStrings(t *testing.T) {
	for r, want := range map[Role]string{0: "Role(0)", RoleCoordinator: "coordinator", RoleParticipant: "participant",
		RoleClient: "client", RoleApp: "app", RoleAdmin: "admin", roleEnd: "Role(6)"} {
		if r.String() != want {
			t.Errorf("Role %d: %q, want %q", r, r, want)
		}
	}
	for a, want := range map[Action]string{0: "Action(0)", ActSubmit: "submit", ActSubmitTx: "submit-tx",
		ActOutcome: "outcome", ActOperate: "operate", ActDeliver: "deliver", ActAdmin: "admin", ActRecords: "records", ActReplicate: "replicate", actionEnd: "Action(9)"} {
		if a.String() != want {
			t.Errorf("Action %d: %q, want %q", a, a, want)
		}
	}
	if Coordinator.Node() != twopc.CoordinatorID || Participant("x").Node() != "x" || (Identity{Role: RoleAdmin, Name: "x"}).Node() != "" {
		t.Error("Node() is wrong")
	}
}

// tok returns a valid token of 32 bytes starting with c.
func tok(c string) string { return c + strings.Repeat("x", MinTokenBytes-len(c)) }

func TestParseTokens(t *testing.T) {
	data := "# tokens\n\n" +
		"dtx://client/web   " + tok("a") + "\n" +
		"   dtx://admin/ops\t" + tok("b") + "   \n" +
		"dtx://app/shop " + tok("c") + strings.Repeat("y", 100) + "\n" +
		"dtx://client/web " + tok("d") + "\n" // a second token for the same identity is fine
	ts, err := ParseTokens([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	hits := map[string]Identity{
		tok("a"):                            {Role: RoleClient, Name: "web"},
		tok("b"):                            {Role: RoleAdmin, Name: "ops"},
		tok("c") + strings.Repeat("y", 100): {Role: RoleApp, Name: "shop"},
		tok("d"):                            {Role: RoleClient, Name: "web"},
	}
	for token, want := range hits {
		if id, ok := ts.Lookup(token); !ok || id != want {
			t.Errorf("Lookup(%q) = %v, %v; want %v", token, id, ok, want)
		}
	}
	for _, miss := range []string{"", tok("e"), tok("a") + "x", tok("a")[1:], strings.ToUpper(tok("a")), " " + tok("a")} {
		if id, ok := ts.Lookup(miss); ok {
			t.Errorf("Lookup(%q) = %v; want a miss", miss, id)
		}
	}
	var none *Tokens
	if _, ok := none.Lookup(tok("a")); ok {
		t.Error("a nil token set finds a token")
	}

	bad := map[string]string{
		"empty":                 "",
		"only comments":         "# nothing\n\n   \n",
		"one field":             "dtx://client/web\n",
		"three fields":          "dtx://client/web " + tok("a") + " extra\n",
		"a space in the token":  "dtx://client/web " + tok("a")[:16] + " " + tok("a")[16:] + "\n",
		"bad identity":          "dtx://root/web " + tok("a") + "\n",
		"bad name":              "dtx://client/w/eb " + tok("a") + "\n",
		"no scheme":             "client/web " + tok("a") + "\n",
		"short token":           "dtx://client/web " + strings.Repeat("z", MinTokenBytes-1) + "\n",
		"duplicate token":       "dtx://client/web " + tok("a") + "\ndtx://admin/ops " + tok("a") + "\n",
		"duplicate token, same": "dtx://client/web " + tok("a") + "\ndtx://client/web " + tok("a") + "\n",
		"coordinator":           "dtx://coordinator " + tok("a") + "\n",
		"participant":           "dtx://participant/inventory " + tok("a") + "\n",
		"control byte":          "dtx://client/web " + tok("a") + "\x01\n",
		"DEL":                   "dtx://client/web " + tok("a") + "\x7f\n",
		"non-ASCII":             "dtx://client/web " + tok("a") + "é\n",
		"NUL":                   "dtx://client/web " + tok("a") + "\x00\n",
		"a good line, then bad": "dtx://client/web " + tok("a") + "\ndtx://client/x short\n",
		"a huge line":           "dtx://client/web " + strings.Repeat("q", 1<<17) + "\n",
	}
	for name, data := range bad {
		if ts, err := ParseTokens([]byte(data)); err == nil {
			t.Errorf("%s: ParseTokens accepted it (%d tokens)", name, len(ts.entries))
		}
	}
	if _, err := ParseTokens([]byte("dtx://client/web " + tok("a") + "\ndtx://admin/ops " + tok("a") + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a duplicate token must name both lines: %v", err)
	}
	if _, err := ParseTokens([]byte("dtx://client/web " + tok("secretvalue"))); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTokens([]byte("dtx://participant/inventory " + tok("secretvalue"))); err == nil || strings.Contains(err.Error(), "secretvalue") {
		t.Errorf("an error must not quote the token: %v", err)
	}
}

func TestFromBearer(t *testing.T) {
	ts, err := ParseTokens([]byte("dtx://client/web " + tok("a") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	web := Identity{Role: RoleClient, Name: "web"}
	cases := []struct {
		header string
		id     Identity
		ok     bool
		err    bool
	}{
		{"", Identity{}, false, false},
		{"Bearer " + tok("a"), web, true, false},
		{"bearer " + tok("a"), web, true, false},
		{"BEARER " + tok("a"), web, true, false},
		{"Bearer   " + tok("a") + "  ", web, true, false},
		{"Bearer " + tok("b"), Identity{}, true, true},
		{"Bearer", Identity{}, true, true},
		{"Bearer ", Identity{}, true, true},
		{"Bearer    ", Identity{}, true, true},
		{"Basic " + tok("a"), Identity{}, true, true},
		{tok("a"), Identity{}, true, true},
		{"Bearer\t" + tok("a"), Identity{}, true, true},
		{"Bearer" + tok("a"), Identity{}, true, true},
		{"Bearer " + tok("a") + " " + tok("a"), Identity{}, true, true},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		id, ok, err := ts.FromBearer(r)
		if id != c.id || ok != c.ok || (err != nil) != c.err {
			t.Errorf("Authorization %q: %v, %v, %v", c.header, id, ok, err)
		}
	}
	// A token sent under another header name counts for nothing.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Authorization", "Bearer "+tok("a"))
	if _, ok, _ := ts.FromBearer(r); ok {
		t.Error("X-Authorization is read")
	}
	// Without a token file every token is unknown.
	var none *Tokens
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+tok("a"))
	if _, ok, err := none.FromBearer(r); !ok || err == nil {
		t.Errorf("nil token set: ok=%v err=%v", ok, err)
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	if err := os.WriteFile(path, []byte("dtx://admin/ops "+tok("a")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		ts, err := LoadTokens(path)
		if err != nil {
			t.Fatalf("mode %v: %v", mode, err)
		}
		if id, ok := ts.Lookup(tok("a")); !ok || id != (Identity{Role: RoleAdmin, Name: "ops"}) {
			t.Fatalf("mode %v: Lookup = %v, %v", mode, id, ok)
		}
	}
	for _, mode := range []os.FileMode{0o640, 0o660, 0o604, 0o606, 0o644, 0o666, 0o610, 0o601, 0o602, 0o620} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTokens(path); err == nil || !strings.Contains(err.Error(), "other users") {
			t.Errorf("mode %v: %v; want a refusal", mode, err)
		}
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loads")
	}
	// A malformed file names itself.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("dtx://admin/ops short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		s, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) < MinTokenBytes || seen[s] {
			t.Fatalf("token %q: too short or repeated", s)
		}
		seen[s] = true
		if _, err := ParseTokens([]byte("dtx://client/x " + s)); err != nil {
			t.Fatalf("a fresh token is not accepted in a token file: %v", err)
		}
	}
}
