package firmwaresim

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProvision(t *testing.T) {
	tests := []struct {
		name         string
		existing     []string
		failures     int // 503 answers before the hub creates the device
		limited      int // 429 answers before the hub creates the device
		attempts     int
		token        string
		wantStatus   int // APIError status expected, 0 for success
		wantCreated  int
		wantRotated  int
		wantRequests int
	}{
		{name: "new device is created", attempts: 3, token: adminToken, wantCreated: 1, wantRequests: 1},
		{name: "existing device gets a new token", existing: []string{"d1"}, attempts: 3, token: adminToken, wantRotated: 1, wantRequests: 2},
		{name: "transient failures are retried", failures: 2, attempts: 3, token: adminToken, wantCreated: 1, wantRequests: 3},
		{name: "retries are bounded", failures: 5, attempts: 2, token: adminToken, wantStatus: http.StatusServiceUnavailable, wantRequests: 2},
		{name: "rate limiting waits without using up attempts", limited: 3, attempts: 1, token: adminToken, wantCreated: 1, wantRequests: 4},
		{name: "bad admin token is not retried", attempts: 3, token: "wrong", wantStatus: http.StatusUnauthorized, wantRequests: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newFakeHub(t, tc.existing...)
			hub.failCreate("d1", tc.failures)
			hub.limitCreate("d1", tc.limited)
			base, err := url.Parse(hub.srv.URL)
			require.NoError(t, err)
			p := &provisioner{
				base:     base,
				token:    tc.token,
				client:   hub.srv.Client(),
				attempts: tc.attempts,
				backoff:  time.Millisecond,
				log:      testLogger(t),
			}

			got, err := p.provision(t.Context(), deviceSpec{ID: "d1", Type: TypeThermostat, Labels: map[string]string{"sim": "true"}})

			created, rotated, requests := hub.snapshot()
			require.Len(t, created, tc.wantCreated)
			require.Len(t, rotated, tc.wantRotated)
			require.Equal(t, tc.wantRequests, requests)
			if tc.wantStatus != 0 {
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				require.Equal(t, tc.wantStatus, apiErr.Status)
				require.NotEmpty(t, apiErr.Detail, "problem JSON detail is decoded")
				return
			}
			require.NoError(t, err)
			require.Equal(t, hub.token("d1"), got)
		})
	}
}

func TestProvisionStopsWithContext(t *testing.T) {
	hub := newFakeHub(t)
	hub.failCreate("d1", 100)
	base, err := url.Parse(hub.srv.URL)
	require.NoError(t, err)
	p := &provisioner{base: base, token: adminToken, client: hub.srv.Client(), attempts: 100, backoff: time.Hour, log: testLogger(t)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_, err := p.provision(ctx, deviceSpec{ID: "d1", Type: TypeWearable, Labels: map[string]string{"sim": "true"}})
		done <- err
	})
	eventually(t, 5*time.Second, func() bool { _, _, n := hub.snapshot(); return n == 1 }, "first attempt")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("provision did not return after cancel")
	}
}
