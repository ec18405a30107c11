// Package transport moves twopc messages between nodes. Transport is what a
// node's driver sends with; Network is the in-process implementation, which
// can also lose, delay, duplicate and reorder messages on purpose.
package transport

import (
	"slices"

	"github.com/dtx-dev/dtx/twopc"
)

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

// ByDestination splits msgs into one batch per destination, keeping their
// order, and calls fn once per destination, in the order destinations first
// appear. Each batch is a fresh slice that fn may keep.
func ByDestination(msgs []twopc.Message, fn func(to string, batch []twopc.Message)) {
	if len(msgs) == 0 {
		return
	}
	// Destinations are few (the participants of a deployment): a linear
	// scan of the ones seen so far beats a map.
	var tos []string
	var counts []int
	for i := range msgs {
		j := slices.Index(tos, msgs[i].To)
		if j < 0 {
			tos = append(tos, msgs[i].To)
			counts = append(counts, 0)
			j = len(tos) - 1
		}
		counts[j]++
	}
	if len(tos) == 1 {
		fn(tos[0], slices.Clone(msgs))
		return
	}
	batches := make([][]twopc.Message, len(tos))
	for j := range batches {
		batches[j] = make([]twopc.Message, 0, counts[j])
	}
	for i := range msgs {
		j := slices.Index(tos, msgs[i].To)
		batches[j] = append(batches[j], msgs[i])
	}
	for j, to := range tos {
		fn(to, batches[j])
	}
}
