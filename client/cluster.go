package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

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
		if len(body) > 512 {
			body = append(body[:512:512], "..."...)
		}
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
