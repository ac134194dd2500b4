// Package cli is the command line of a running hub: `telehub device ...`,
// `telehub token ...` and friends talk to the hub's HTTP API.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Client calls the hub's API with a token.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// APIError is an error answer of the API (a problem document).
type APIError struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *APIError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Title)
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the hub at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		e := &APIError{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(e)
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// Env is what a command reads from its surroundings.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// connFlags are the flags every command has: where the hub is and the token.
type connFlags struct {
	url, token, tokenFile string
	json                  bool
}

func (f *connFlags) register(fs *flag.FlagSet, env Env) {
	def := env.Getenv("TELEHUB_URL")
	if def == "" {
		def = "http://localhost:8080"
	}
	fs.StringVar(&f.url, "url", def, "hub URL (env TELEHUB_URL)")
	fs.StringVar(&f.token, "token", env.Getenv("TELEHUB_TOKEN"), "API token (env TELEHUB_TOKEN)")
	fs.StringVar(&f.tokenFile, "token-file", "./data/admin.token", "file holding the API token, used when --token is empty")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
}

func (f *connFlags) client() (*Client, error) {
	tok := f.token
	if tok == "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("no token: set --token, TELEHUB_TOKEN or --token-file (%w)", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return &Client{URL: f.url, Token: tok}, nil
}

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ErrUsage marks a command line that could not be understood.
var ErrUsage = errors.New("usage")
