package grpcnet

import (
	"fmt"

	"github.com/dtx-dev/dtx/api/dtxv1"
)

// Client returns a Transport client of peer on the connection the network
// keeps to it (the same mutual TLS and peer check as its messages), for
// calls other than the protocol's own (Records).
func (n *Network) Client(peer string) (dtxv1.TransportClient, error) {
	s := n.sender(peer)
	if s == nil {
		return nil, fmt.Errorf("grpcnet: no connection to %q (unknown peer, or the network is closed)", peer)
	}
	return s.clients[s.cur.Load()], nil
}
