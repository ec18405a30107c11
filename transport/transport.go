// Package transport moves twopc messages between nodes. Transport is what a
// node's driver sends with; Network is the in-process implementation, which
// can also lose, delay, duplicate and reorder messages on purpose.
package transport

import "github.com/dtx-dev/dtx/twopc"

// Transport sends messages, best effort: a message may be lost, and the
// protocol's timeouts and retries make up for it. Send never blocks for
// long and never returns an error: an unreachable node is a lost message.
type Transport interface {
	Send(msgs []twopc.Message)
}

// Network is a Transport that also delivers: a node registers the inbox
// where its messages arrive, and unregisters it when it stops or crashes
// (messages to it are lost meanwhile).
type Network interface {
	Transport
	// Register connects node id to inbox, replacing an earlier inbox.
	Register(id string, inbox chan []twopc.Message)
	// Unregister disconnects id if it is still connected to inbox.
	Unregister(id string, inbox chan []twopc.Message)
}
