package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// BulkSize is how many devices one POST /api/v1/devices/bulk registers.
const BulkSize = 1000

// DeviceIDs returns n device IDs: prefix-000001 and on.
func DeviceIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%06d", prefix, i+1)
	}
	return ids
}

// Provision registers the devices with a Telehub at api (http://host:port)
// through POST /api/v1/devices/bulk, BulkSize at a time, with the admin
// token, and returns their MQTT identities. A device that already exists
// gets a new token (POST /api/v1/devices/{id}/token).
func Provision(ctx context.Context, api, adminToken string, ids []string, deviceType string) ([]Device, error) {
	client := &http.Client{Timeout: 2 * time.Minute}
	out := make([]Device, 0, len(ids))
	for from := 0; from < len(ids); from += BulkSize {
		batch := ids[from:min(from+BulkSize, len(ids))]
		type spec struct {
			ID     string            `json:"id"`
			Type   string            `json:"type"`
			Labels map[string]string `json:"labels"`
		}
		req := struct {
			Devices []spec `json:"devices"`
		}{}
		for _, id := range batch {
			req.Devices = append(req.Devices, spec{ID: id, Type: deviceType, Labels: map[string]string{"fleet": "bench"}})
		}
		var resp struct {
			Results []struct {
				ID     string `json:"id"`
				Status int    `json:"status"`
				Token  string `json:"token"`
				Error  string `json:"error"`
			} `json:"results"`
		}
		if err := callAPI(ctx, client, api+"/api/v1/devices/bulk", adminToken, req, &resp); err != nil {
			return nil, err
		}
		for _, r := range resp.Results {
			switch r.Status {
			case http.StatusCreated:
				out = append(out, Device{ID: r.ID, Token: r.Token})
			case http.StatusConflict:
				var rot struct {
					Token string `json:"token"`
				}
				if err := callAPI(ctx, client, api+"/api/v1/devices/"+url.PathEscape(r.ID)+"/token", adminToken, nil, &rot); err != nil {
					return nil, err
				}
				out = append(out, Device{ID: r.ID, Token: rot.Token})
			default:
				return nil, fmt.Errorf("load: provision %s: %d %s", r.ID, r.Status, r.Error)
			}
		}
	}
	return out, nil
}

// callAPI POSTs body as JSON (nothing when nil) and decodes a 2xx answer into out.
func callAPI(ctx context.Context, client *http.Client, u, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("load: %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("load: %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("load: %s: decode answer: %w", u, err)
	}
	return nil
}
