package grpcnet

import (
	"fmt"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/twopc"
)

// Limits on what one message may carry, checked on receipt (a peer is not
// trusted to respect them).
const (
	maxIDBytes     = 128
	maxReasonBytes = 64 << 10
	maxWaits       = 1 << 16
	maxTraceBytes  = 512
)

// ToProto maps a twopc.Message to its wire form. Every field of
// twopc.Message is mapped; a test fails if one is added and not mapped here.
func ToProto(m *twopc.Message) *dtxv1.Message {
	p := &dtxv1.Message{
		Type:    dtxv1.MsgType(m.Type),
		From:    m.From,
		To:      m.To,
		Tx:      m.Tx,
		Epoch:   m.Epoch,
		Vote:    dtxv1.Vote(m.Vote),
		Reason:  m.Reason,
		Op:      m.Op,
		Ts:      m.TS,
		Attempt: m.Attempt,
		Trace:   m.Trace,
	}
	if len(m.Waits) > 0 {
		p.Waits = make([]*dtxv1.Wait, len(m.Waits))
		for i, w := range m.Waits {
			p.Waits[i] = &dtxv1.Wait{Waiter: w.Waiter, Holder: w.Holder, Age: w.Age}
		}
	}
	return p
}

// FromProto maps a wire message back, checking what the protocol machines
// rely on: a known type, a known vote, a transaction id, bounded sizes.
func FromProto(p *dtxv1.Message) (twopc.Message, error) {
	m := twopc.Message{
		Type:    twopc.MsgType(p.GetType()),
		From:    p.GetFrom(),
		To:      p.GetTo(),
		Tx:      p.GetTx(),
		Epoch:   p.GetEpoch(),
		Vote:    twopc.Vote(p.GetVote()),
		Reason:  p.GetReason(),
		Op:      p.GetOp(),
		TS:      p.GetTs(),
		Attempt: p.GetAttempt(),
		Trace:   p.GetTrace(),
	}
	switch {
	case p.GetType() <= 0 || p.GetType() > 255 || !knownMsgType(m.Type):
		return m, fmt.Errorf("unknown message type %d", p.GetType())
	case p.GetVote() < 0 || p.GetVote() > 255 || (m.Vote != 0 && !knownVote(m.Vote)):
		return m, fmt.Errorf("unknown vote %d", p.GetVote())
	case m.From == "" || m.To == "":
		return m, fmt.Errorf("%s without from or to", m.Type)
	case len(m.From) > maxIDBytes || len(m.To) > maxIDBytes:
		return m, fmt.Errorf("%s: node name longer than %d bytes", m.Type, maxIDBytes)
	case m.Type != twopc.MsgWaits && m.Type != twopc.MsgRestarted && twopc.ValidTxID(m.Tx) != nil:
		return m, fmt.Errorf("%s: transaction id: %v", m.Type, twopc.ValidTxID(m.Tx))
	case (m.Type == twopc.MsgWaits || m.Type == twopc.MsgRestarted) && m.Tx != "":
		return m, fmt.Errorf("%s names a transaction", m.Type)
	case m.Type == twopc.MsgVote && m.Vote == 0:
		return m, fmt.Errorf("VOTE without a vote")

	case len(m.Reason) > maxReasonBytes:
		return m, fmt.Errorf("%s: reason longer than %d bytes", m.Type, maxReasonBytes)
	case len(m.Trace) > maxTraceBytes:
		return m, fmt.Errorf("%s: trace context longer than %d bytes", m.Type, maxTraceBytes)
	case len(p.GetWaits()) > maxWaits:
		return m, fmt.Errorf("%s: more than %d wait-for edges", m.Type, maxWaits)
	}
	for i, w := range p.GetWaits() {
		if twopc.ValidTxID(w.GetWaiter()) != nil || twopc.ValidTxID(w.GetHolder()) != nil {
			return m, fmt.Errorf("WAITS: edge %d: bad transaction id", i)
		}
	}
	if ws := p.GetWaits(); len(ws) > 0 {
		m.Waits = make([]twopc.Wait, len(ws))
		for i, w := range ws {
			m.Waits[i] = twopc.Wait{Waiter: w.GetWaiter(), Holder: w.GetHolder(), Age: w.GetAge()}
		}
	}
	return m, nil
}

// knownMsgType reports whether the wire protocol names t (a test checks
// that it names every type twopc defines).
func knownMsgType(t twopc.MsgType) bool {
	_, ok := dtxv1.MsgType_name[int32(t)]
	return ok && t != 0
}

func knownVote(v twopc.Vote) bool {
	_, ok := dtxv1.Vote_name[int32(v)]
	return ok && v != 0
}
