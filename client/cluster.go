package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dtx-dev/dtx/engine"
	"github.com/dtx-dev/dtx/server"
	"github.com/dtx-dev/dtx/services/inventory"
	"github.com/dtx-dev/dtx/services/order"
	"github.com/dtx-dev/dtx/services/payment"
)

// ServiceState is one participant's GET /v1/state.
type ServiceState struct {
	Service string          `json:"service"`
	InDoubt []string        `json:"in_doubt"`
	Check   string          `json:"check,omitempty"`
	State   json.RawMessage `json:"state,omitempty"`
}

// ClusterState is the state of every process of a cluster, read over HTTP.
type ClusterState struct {
	Coordinator server.CoordStatusBody
	Services    map[string]ServiceState
	// State holds the built-in services' states and every in-doubt branch
	// ("service/tx"), in the shape `dtx state` prints for the embedded
	// deployment, so that engine.CheckAtomic applies.
	State engine.State
}

// FetchClusterState reads GET /v1/status from the coordinator and GET
// /v1/state from every service (name -> HTTP address, host:port).
func FetchClusterState(ctx context.Context, h *HTTP, coordHTTP string, services map[string]string) (*ClusterState, error) {
	cs := &ClusterState{Services: map[string]ServiceState{}, State: engine.State{InDoubt: []string{}}}
	if err := h.Get(ctx, coordHTTP, "/v1/status", &cs.Coordinator); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	cs.State.Coordinator = engine.CoordStatus{Epoch: cs.Coordinator.Epoch, Inflight: cs.Coordinator.Inflight}
	for name, addr := range services {
		var st ServiceState
		if err := h.Get(ctx, addr, "/v1/state", &st); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cs.Services[name] = st
		for _, tx := range st.InDoubt {
			cs.State.InDoubt = append(cs.State.InDoubt, name+"/"+tx)
		}
		var err error
		switch name {
		case inventory.ID:
			err = json.Unmarshal(st.State, &cs.State.Inventory)
		case payment.ID:
			err = json.Unmarshal(st.State, &cs.State.Payment)
		case order.ID:
			err = json.Unmarshal(st.State, &cs.State.Order)
		}
		if err != nil {
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
// atomicity across the built-in services (engine.CheckAtomic). Run it on a
// quiet cluster: while commits are being delivered, a transaction is
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
	errs = append(errs, engine.CheckAtomic(&cs.State)...)
	return errors.Join(errs...)
}

// HTTP reaches the HTTP endpoints of a cluster's processes: plain HTTP
// (the zero value, or nil), or HTTPS with a client certificate (TLS) and/or
// a bearer token. Addresses are host:port.
type HTTP struct {
	// TLS, if set, makes every request HTTPS with this client
	// configuration (RootCAs to check the server, Certificates to present).
	TLS *tls.Config
	// Token, if set, is sent as "Authorization: Bearer TOKEN".
	Token string

	once sync.Once
	hc   *http.Client
}

func (h *HTTP) client() *http.Client {
	if h == nil {
		return http.DefaultClient
	}
	h.once.Do(func() {
		h.hc = http.DefaultClient
		if h.TLS != nil {
			h.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS, ForceAttemptHTTP2: true}}
		}
	})
	return h.hc
}

// URL returns the URL of path at the process at addr.
func (h *HTTP) URL(addr, path string) string {
	if h != nil && h.TLS != nil {
		return "https://" + addr + path
	}
	return "http://" + addr + path
}

// Do sends a request made for URL(addr, path), with the token.
func (h *HTTP) Do(req *http.Request) (*http.Response, error) {
	if h != nil && h.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
	return h.client().Do(req)
}

// Get reads the JSON at path of the process at addr into v.
func (h *HTTP) Get(ctx context.Context, addr, path string, v any) error {
	url := h.URL(addr, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := h.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// WaitReady polls a process's GET /readyz (at its HTTP address) until it
// answers 200, for up to d, unless the process exits first (dead closed).
func WaitReady(ctx context.Context, h *HTTP, addr string, d time.Duration, dead <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		err := h.ready(ctx, addr)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-dead:
			return errors.New("it exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ready asks a process's GET /readyz once.
func (h *HTTP) ready(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL(addr, "/readyz"), nil)
	if err != nil {
		return err
	}
	resp, err := h.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz: %s", addr, resp.Status)
	}
	return nil
}
