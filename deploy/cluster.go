package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/dtx-dev/dtx/client"
	"github.com/dtx-dev/dtx/services"
)

// ServiceState is one participant's GET /v1/state.
type ServiceState struct {
	Service string          `json:"service"`
	InDoubt []string        `json:"in_doubt"`
	Check   string          `json:"check,omitempty"`
	State   json.RawMessage `json:"state,omitempty"`
}

// CoordStatus is the coordinator's GET /v1/status (the server writes it,
// the tools read it).
type CoordStatus struct {
	Epoch        uint64   `json:"epoch"`
	Inflight     int      `json:"inflight"`
	Draining     bool     `json:"draining"`
	Participants []string `json:"participants"`
	// Shed counts messages about unknown transactions dropped past a
	// participant's presumed-abort budget; Unauthorized the batches refused
	// because a message was not allowed from its sender.
	Shed         uint64 `json:"shed"`
	Unauthorized uint64 `json:"unauthorized"`
	// Calls and MessagesPerCall describe the transport's batching.
	Calls           uint64  `json:"calls"`
	MessagesPerCall float64 `json:"messages_per_call"`
	// Replica is set by a replica of a replicated coordinator: its view of
	// the raft group (a follower has no epoch or inflight of its own).
	Replica *ReplicaStatus `json:"replica,omitempty"`
}

// ReplicaStatus is one coordinator replica's view of its raft group.
type ReplicaStatus struct {
	ID      uint64 `json:"id"`
	State   string `json:"state"` // leader, follower, candidate, pre-candidate
	Term    uint64 `json:"term"`
	Leader  uint64 `json:"leader"` // 0: none known
	Applied uint64 `json:"applied"`
	Commit  uint64 `json:"commit"`
	// Serving: this replica leads and its coordinator is up.
	Serving bool `json:"serving"`
	// Compacted is the index up to which its raft log was compacted.
	Compacted uint64 `json:"compacted"`
}

// ClusterState is the state of every process of a networked deployment,
// read over HTTP.
type ClusterState struct {
	Coordinator CoordStatus
	Services    map[string]ServiceState
	// State holds the built-in services' states and every in-doubt branch
	// ("service/tx"), in the shape `dtx state` prints for the embedded
	// deployment, so that services.CheckAtomic applies.
	State services.State
}

// FetchClusterState reads GET /v1/status from the coordinator and GET
// /v1/state from every service (name -> HTTP address, host:port). A
// service that is not built in (a user's own) keeps only its raw state.
func FetchClusterState(ctx context.Context, h *client.HTTP, coordHTTP string, svcs map[string]string) (*ClusterState, error) {
	cs := &ClusterState{Services: map[string]ServiceState{}, State: services.State{InDoubt: []string{}}}
	if err := h.Get(ctx, coordHTTP, "/v1/status", &cs.Coordinator); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	cs.State.Coordinator = services.CoordStatus{Epoch: cs.Coordinator.Epoch, Inflight: cs.Coordinator.Inflight}
	for name, addr := range svcs {
		var st ServiceState
		if err := h.Get(ctx, addr, "/v1/state", &st); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cs.Services[name] = st
		for _, tx := range st.InDoubt {
			cs.State.InDoubt = append(cs.State.InDoubt, name+"/"+tx)
		}
		if _, ok := services.Lookup(name); !ok {
			continue
		}
		if err := cs.State.SetJSON(name, st.State); err != nil {
			return nil, fmt.Errorf("%s: state: %w", name, err)
		}
	}
	slices.Sort(cs.State.InDoubt)
	return cs, nil
}

// Quiet reports whether nothing is unfinished: no transaction in flight at
// the coordinator, no branch in doubt at any service.
func (cs *ClusterState) Quiet() bool {
	return cs.Coordinator.Inflight == 0 && len(cs.State.InDoubt) == 0
}

// Check returns every invariant violation: each service's own check, and
// atomicity across the built-in services (services.CheckAtomic). Run it on
// a quiet cluster: while commits are being delivered, a transaction is
// legitimately committed at some services and not yet at others.
func (cs *ClusterState) Check() error {
	var errs []error
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range cs.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		if c := cs.Services[name].Check; c != "" {
			errs = append(errs, fmt.Errorf("%s: %s", name, c))
		}
	}
	errs = append(errs, services.CheckAtomic(&cs.State)...)
	return errors.Join(errs...)
}
