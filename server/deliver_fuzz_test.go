package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"maps"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/transport/grpcnet"
	"github.com/dtx-dev/dtx/twopc"
)

// fuzzSender is how the peer of a Deliver call presents itself.
type fuzzSender struct {
	name        string
	ctx         context.Context
	coordinator bool // its certificate names the coordinator
}

var (
	fuzzSendersOnce sync.Once
	fuzzSenders     []fuzzSender
	fuzzSendersErr  error
)

// senders returns the peers a fuzzed Deliver comes from: a verified
// certificate of each role (signed by a CA made here, verified as the TLS
// stack would), one whose certificate names no identity, a TLS peer
// without a verified chain, and a call with no peer at all.
func senders(tb testing.TB) []fuzzSender {
	fuzzSendersOnce.Do(func() { fuzzSenders, fuzzSendersErr = makeFuzzSenders() })
	if fuzzSendersErr != nil {
		tb.Fatal(fuzzSendersErr)
	}
	return fuzzSenders
}

func makeFuzzSenders() ([]fuzzSender, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tlsPeer := func(uri, cn string, serial int64) (context.Context, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if uri != "" {
			u, err := url.Parse(uri)
			if err != nil {
				return nil, err
			}
			tmpl.URIs = []*url.URL{u}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, err
		}
		state := tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf, ca}, VerifiedChains: chains}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}}), nil
	}
	var out []fuzzSender
	for i, s := range []struct{ name, uri, cn string }{
		{"coordinator", "dtx://coordinator", "dtx://coordinator"},
		{"participant/inventory", "dtx://participant/inventory", ""},
		{"participant/order", "dtx://participant/order", "dtx://participant/order"},
		{"client/web", "dtx://client/web", ""},
		{"admin/ops", "", "dtx://admin/ops"}, // CommonName only
		{"app/shop", "dtx://app/shop", ""},
		// A certificate of the CA that names no identity, but whose
		// CommonName is the coordinator's node name.
		{"no identity", "", twopc.CoordinatorID},
	} {
		ctx, err := tlsPeer(s.uri, s.cn, int64(i+2))
		if err != nil {
			return nil, err
		}
		out = append(out, fuzzSender{name: s.name, ctx: ctx, coordinator: s.name == "coordinator"})
	}
	// A TLS peer whose chain was not verified: what it sent counts for
	// nothing.
	coordCtx := out[0].ctx
	p, _ := peer.FromContext(coordCtx)
	unverified := p.AuthInfo.(credentials.TLSInfo)
	unverified.State.VerifiedChains = nil
	out = append(out,
		fuzzSender{name: "unverified TLS", ctx: peer.NewContext(context.Background(), &peer.Peer{AuthInfo: unverified})},
		fuzzSender{name: "no peer", ctx: context.Background()},
	)
	return out, nil
}

// deliverAs builds a participant "inventory" whose transport asks the real
// guard about every message (mutual TLS, messages taken from the
// coordinator only), delivers b to it as sender, and checks what came
// through. It returns what reached the inbox of inventory and the error.
func deliverAs(t *testing.T, s fuzzSender, b *dtxv1.Batch) ([]twopc.Message, error) {
	g := &guard{self: "inventory", tls: true, senders: map[string]bool{twopc.CoordinatorID: true}}
	cfg := grpcnet.DefaultConfig()
	cfg.Authorize = g.message
	cfg.InboxWait = 0
	nw, err := grpcnet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	inbox := make(chan []twopc.Message, 1)
	nw.Register("inventory", inbox)
	// Another node served by the same process: the guard of inventory
	// must not let anything through to it.
	other := make(chan []twopc.Message, 1)
	nw.Register("order", other)
	coordInbox := make(chan []twopc.Message, 1)
	nw.Register(twopc.CoordinatorID, coordInbox)

	reply, err := nw.Deliver(s.ctx, b)

	var got []twopc.Message
	select {
	case got = <-inbox:
	default:
	}
	select {
	case m := <-other:
		t.Fatalf("%s: a batch reached order through the guard of inventory: %v", s.name, m)
	case m := <-coordInbox:
		t.Fatalf("%s: a batch reached the coordinator through the guard of inventory: %v", s.name, m)
	default:
	}
	in := b.GetMessages()
	denied := g.deniedMsgs.Load()
	st := nw.Stats()
	if err != nil {
		if len(got) > 0 || reply != nil {
			t.Fatalf("%s: Deliver failed (%v) but delivered %d messages", s.name, err, len(got))
		}
		code := status.Code(err)
		if code != codes.InvalidArgument && code != codes.PermissionDenied {
			t.Fatalf("%s: unexpected error %v", s.name, err)
		}
		// A refusal by the guard is counted once, by the guard and by the
		// transport; a malformed batch is not the guard's business.
		if want := uint64(0); code == codes.PermissionDenied {
			want = 1
			if denied != want || st.Unauthorized != want {
				t.Fatalf("%s: PERMISSION_DENIED counted %d by the guard, %d by the transport", s.name, denied, st.Unauthorized)
			}
		} else if denied != 0 || st.Unauthorized != 0 {
			t.Fatalf("%s: %v counted as unauthorized (%d, %d)", s.name, err, denied, st.Unauthorized)
		}
	} else {
		// Whole or nothing: no filter is set, so all of it.
		if len(got) != len(in) || int(reply.GetAccepted()) != len(got) || denied != 0 {
			t.Fatalf("%s: %d messages in, %d delivered, %d accepted, %d denied", s.name, len(in), len(got), reply.GetAccepted(), denied)
		}
	}
	if !s.coordinator && len(in) > 0 && err == nil {
		t.Fatalf("%s: a batch of %d messages was accepted from a sender that is not the coordinator", s.name, len(in))
	}
	if !s.coordinator && len(got) > 0 {
		t.Fatalf("%s: delivered %v", s.name, got)
	}
	for i := range got {
		m := &got[i]
		if m.From != twopc.CoordinatorID || m.To != "inventory" {
			t.Fatalf("%s: delivered a message %q -> %q", s.name, m.From, m.To)
		}
		if m.Type != twopc.MsgPrepare && m.Type != twopc.MsgCommit && m.Type != twopc.MsgAbort {
			t.Fatalf("%s: delivered a %s", s.name, m.Type)
		}
		if err := twopc.ValidTxID(m.Tx); err != nil {
			t.Fatalf("%s: delivered tx %q: %v", s.name, m.Tx, err)
		}
	}
	// And the other way round: the coordinator's well-formed batch for
	// inventory of PREPARE, COMMIT and ABORT is delivered.
	if s.coordinator && honest(in, cfg.MaxBatch) && err != nil {
		t.Fatalf("%s: an honest batch of %d messages was refused: %v", s.name, len(in), err)
	}
	return got, err
}

// honest reports whether in is a non-empty, well-formed batch of the
// coordinator's messages for inventory.
func honest(in []*dtxv1.Message, maxBatch int) bool {
	if len(in) == 0 || len(in) > maxBatch {
		return false
	}
	for _, p := range in {
		m, err := grpcnet.FromProto(p)
		if err != nil || m.From != twopc.CoordinatorID || m.To != "inventory" ||
			!slices.Contains([]twopc.MsgType{twopc.MsgPrepare, twopc.MsgCommit, twopc.MsgAbort}, m.Type) {
			return false
		}
	}
	return true
}

func fuzzSeeds() map[string]*dtxv1.Batch {
	const (
		prepare = dtxv1.MsgType_MSG_TYPE_PREPARE
		commit  = dtxv1.MsgType_MSG_TYPE_COMMIT
		abort   = dtxv1.MsgType_MSG_TYPE_ABORT
		vote    = dtxv1.MsgType_MSG_TYPE_VOTE
		waits   = dtxv1.MsgType_MSG_TYPE_WAITS
	)
	coord := twopc.CoordinatorID
	msg := func(typ dtxv1.MsgType, from, to, tx string) *dtxv1.Message {
		m := &dtxv1.Message{Type: typ, From: from, To: to, Tx: tx, Epoch: 1, Attempt: 1}
		if typ == prepare {
			m.Op = []byte(`{"sku":"x","qty":1}`)
			m.Ts = 7
		}
		if typ == vote {
			m.Vote = dtxv1.Vote_VOTE_YES
		}
		return m
	}
	batch := func(ms ...*dtxv1.Message) *dtxv1.Batch { return &dtxv1.Batch{Messages: ms} }
	farEpoch := msg(prepare, coord, "inventory", "t-far")
	farEpoch.Epoch = ^uint64(0)
	return map[string]*dtxv1.Batch{
		"empty":        batch(),
		"prepare":      batch(msg(prepare, coord, "inventory", "t1")),
		"decisions":    batch(msg(prepare, coord, "inventory", "t1"), msg(commit, coord, "inventory", "t2"), msg(abort, coord, "inventory", "t3")),
		"far epoch":    batch(farEpoch),
		"unicode id":   batch(msg(abort, coord, "inventory", "tx-é-🙂")),
		"vote":         batch(msg(vote, "inventory", coord, "t1")),
		"vote to inv":  batch(msg(vote, "order", "inventory", "t1")),
		"forged from":  batch(msg(commit, "inventory", "inventory", "t1")),
		"for order":    batch(msg(commit, coord, "order", "t1")),
		"mixed To":     batch(msg(commit, coord, "inventory", "t1"), msg(commit, coord, "order", "t1")),
		"mixed types":  batch(msg(commit, coord, "inventory", "t1"), msg(vote, coord, "inventory", "t1")),
		"ctl tx id":    batch(msg(abort, coord, "inventory", "t\x00")),
		"empty tx id":  batch(msg(commit, coord, "inventory", "")),
		"long tx id":   batch(msg(commit, coord, "inventory", strings.Repeat("x", twopc.MaxTxIDBytes+1))),
		"bad utf8 id":  batch(msg(commit, coord, "inventory", "\xff\xfe")),
		"unknown type": batch(&dtxv1.Message{Type: 77, From: coord, To: "inventory", Tx: "t1"}),
		"no type":      batch(&dtxv1.Message{From: coord, To: "inventory", Tx: "t1"}),
		"waits": batch(&dtxv1.Message{Type: waits, From: coord, To: "inventory",
			Waits: []*dtxv1.Wait{{Waiter: "t1", Holder: "t2", Age: 3}}}),
	}
}

// TestDeliverAuthorized pins down what the fuzz target checks on a few
// batches, so that it cannot pass by refusing everything.
func TestDeliverAuthorized(t *testing.T) {
	ss := senders(t)
	seeds := fuzzSeeds()
	for _, s := range ss {
		got, err := deliverAs(t, s, seeds["decisions"])
		if s.coordinator != (err == nil) || s.coordinator != (len(got) == 3) {
			t.Errorf("%s: decisions: %d delivered, %v", s.name, len(got), err)
		}
		if !s.coordinator && status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v; want PERMISSION_DENIED", s.name, err)
		}
	}
	coord := ss[0]
	for name, b := range seeds {
		got, err := deliverAs(t, coord, b)
		want := name == "empty" || honest(b.GetMessages(), grpcnet.DefaultConfig().MaxBatch)
		if (err == nil) != want || len(got) != len(b.GetMessages()) && want {
			t.Errorf("coordinator: %s: %d delivered, %v; want delivered=%v", name, len(got), err, want)
		}
	}
}

// FuzzDeliverAuthorized feeds arbitrary batches, from every kind of
// sender, through the transport's Deliver with the real guard: nothing but
// the coordinator's PREPARE, COMMIT and ABORT for inventory, with valid
// transaction ids, ever reaches the inbox of inventory.
func FuzzDeliverAuthorized(f *testing.F) {
	ss := senders(f)
	seeds := fuzzSeeds()
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		data, err := proto.Marshal(seeds[name])
		if err != nil {
			// Invalid UTF-8 in a string field: gRPC's codec refuses it
			// before Deliver (TestDeliverAuthorized calls Deliver with it).
			continue
		}
		for i := range ss {
			f.Add(byte(i), data)
		}
	}
	f.Add(byte(0), []byte("\x0a\x03\x08\x01"))     // truncated message
	f.Add(byte(0), []byte{0xff, 0xff, 0xff, 0xff}) // not protobuf
	f.Fuzz(func(t *testing.T, sender byte, data []byte) {
		var b dtxv1.Batch
		if err := proto.Unmarshal(data, &b); err != nil {
			return
		}
		deliverAs(t, ss[int(sender)%len(ss)], &b)
	})
}
