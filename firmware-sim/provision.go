package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxAPIResponse bounds how much of an API response body is read.
const maxAPIResponse = 1 << 20

// Provisioning retry backoff.
const (
	provisionBackoff    = 250 * time.Millisecond
	provisionBackoffMax = 5 * time.Second
	// maxRateLimited bounds the 429 answers one device's provisioning
	// waits out, so a hub that never lets it through cannot hold it forever.
	maxRateLimited = 100
)

// APIError is an error answer of the hub's HTTP API, decoded from its
// application/problem+json body when it has one.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Title is the problem title, or the HTTP status text.
	Title string
	// Detail is the problem detail, possibly empty.
	Detail string
	// RetryAfter is the wait the hub asked for with Retry-After (429, 503),
	// or 0.
	RetryAfter time.Duration
}

// Error implements error.
func (e *APIError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("hub api: %d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("hub api: %d %s", e.Status, e.Title)
}

// Temporary reports whether retrying the request may succeed: server errors
// and rate limiting.
func (e *APIError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// deviceSpec is what the hub is told about a simulated device.
type deviceSpec struct {
	ID     string            `json:"id"`
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels,omitempty"`
}

// credentialsResponse is the hub's answer to device creation and token rotation.
type credentialsResponse struct {
	Device struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"device"`
	Token string `json:"token"`
}

// provisioner registers devices with the hub's HTTP API. Safe for concurrent use.
type provisioner struct {
	base     *url.URL
	token    string
	client   *http.Client
	attempts int
	backoff  time.Duration // first retry delay, doubled up to provisionBackoffMax
	log      *slog.Logger
}

// provision makes sure the device exists on the hub and returns a valid MQTT
// password for it: the device is created, or, when it already exists, its
// token is rotated. Transient failures (network errors, 5xx) are retried
// with backoff up to p.attempts times. A 429 (the hub's API rate limit, which
// a large fleet registering one device per request reaches) waits as long
// as its Retry-After says and does not use up an attempt, up to
// maxRateLimited times.
func (p *provisioner) provision(ctx context.Context, spec deviceSpec) (string, error) {
	backoff := p.backoff
	limited := 0
	for attempt := 1; ; attempt++ {
		token, err := p.provisionOnce(ctx, spec)
		if err == nil {
			return token, nil
		}
		wait := backoff
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests && limited < maxRateLimited {
			limited++
			attempt--
			wait = max(apiErr.RetryAfter, p.backoff)
		} else if attempt >= p.attempts || !retryable(err) || ctx.Err() != nil {
			return "", err
		} else {
			backoff = min(2*backoff, provisionBackoffMax)
		}
		p.log.Debug("provisioning failed, retrying", "device_id", spec.ID, "attempt", attempt, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (p *provisioner) provisionOnce(ctx context.Context, spec deviceSpec) (string, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encode device: %w", err)
	}
	creds, err := p.post(ctx, "/api/v1/devices", body, http.StatusCreated)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict {
		creds, err = p.post(ctx, "/api/v1/devices/"+url.PathEscape(spec.ID)+"/token", nil, http.StatusOK)
		if err != nil {
			return "", fmt.Errorf("rotate token of existing device: %w", err)
		}
		p.log.Debug("device exists, token rotated", "device_id", spec.ID)
	} else if err != nil {
		return "", fmt.Errorf("create device: %w", err)
	}
	if creds.Token == "" {
		return "", errors.New("hub returned no device token")
	}
	if creds.Device.Type != "" && creds.Device.Type != spec.Type {
		p.log.Warn("existing device has another type", "device_id", spec.ID,
			"type", creds.Device.Type, "simulated_type", spec.Type)
	}
	return creds.Token, nil
}

// post sends a JSON POST to path and decodes the credentials answer, which
// must come with status want.
func (p *provisioner) post(ctx context.Context, path string, body []byte, want int) (credentialsResponse, error) {
	var creds credentialsResponse
	u := strings.TrimSuffix(p.base.String(), "/") + path
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, r)
	if err != nil {
		return creds, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return creds, fmt.Errorf("hub api: %w", err) // the error names method and URL
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	if err != nil {
		return creds, fmt.Errorf("read response of %s: %w", path, err)
	}
	if resp.StatusCode != want {
		e := decodeProblem(resp.StatusCode, data)
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			e.RetryAfter = min(time.Duration(secs)*time.Second, provisionBackoffMax)
		}
		return creds, e
	}
	if err := json.Unmarshal(data, &creds); err != nil {
		return creds, fmt.Errorf("decode response of %s: %w", path, err)
	}
	return creds, nil
}

// decodeProblem turns an error answer into an *APIError.
func decodeProblem(status int, body []byte) *APIError {
	e := &APIError{Status: status}
	var problem struct {
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &problem) == nil {
		e.Title, e.Detail = problem.Title, problem.Detail
	}
	if e.Title == "" {
		e.Title = http.StatusText(status)
	}
	return e
}

// retryable reports whether a provisioning error may go away by itself.
func retryable(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Temporary()
	}
	// Anything else comes from the network (including client timeouts) or a
	// garbled answer from a hub that may still be starting. Cancellation of
	// the caller's context is checked by the caller.
	return true
}
