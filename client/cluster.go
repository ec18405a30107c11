package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// WaitReady polls a process's GET /readyz (at its HTTP address) until it
// answers 200, for up to d, unless the process exits first (dead closed).
func WaitReady(ctx context.Context, addr string, d time.Duration, dead <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		err := ready(ctx, addr)
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
func ready(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
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
