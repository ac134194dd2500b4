// Package testenv gives tests the real components that `make test` starts
// (an influxd, a three-server NATS JetStream cluster, Debian's MQTT clients,
// small real file systems that fill up)
// and the helpers around them: polling with a deadline (Eventually),
// certificates, free ports, metrics scrapes, devices that count what was
// acknowledged (SeqDevice), a fleet, a logger into the test's output. When one is missing a test skips under
// a bare `go test` and fails when CI=true, which `make test` always sets, so
// neither CI nor a newcomer's `make test` can pass by skipping.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Missing skips the test, or fails it under CI.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI; run the tests with `make test`", what)
	}
	t.Skipf("%s not available; `make test` provides it", what)
}

// Influx is a database on the test influxd.
type Influx struct {
	URL      string
	Database string
}

// NewInflux creates a fresh database on the influxd that `make test` started
// (TELEHUB_TEST_INFLUX_URL) and drops it when the test ends.
func NewInflux(t testing.TB) Influx {
	t.Helper()
	u := os.Getenv("TELEHUB_TEST_INFLUX_URL")
	if u == "" {
		Missing(t, "influxd (TELEHUB_TEST_INFLUX_URL)")
	}
	db := createDatabase(t, u)
	t.Cleanup(func() { db.InfluxQL("DROP DATABASE " + db.Database) })
	return db
}

// createDatabase creates a database with a random name on the influxd at u.
func createDatabase(t testing.TB, u string) Influx {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	db := Influx{URL: u, Database: "t_" + hex.EncodeToString(b)}
	if _, err := db.InfluxQL("CREATE DATABASE " + db.Database); err != nil {
		t.Fatalf("create influx database: %v", err)
	}
	return db
}

// InfluxQL runs a statement through /query and returns the decoded answer.
func (db Influx) InfluxQL(q string) (QueryResult, error) {
	resp, err := http.PostForm(db.URL+"/query", url.Values{"q": {q}, "db": {db.Database}, "epoch": {"ns"}})
	if err != nil {
		return QueryResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return QueryResult{}, fmt.Errorf("influxql %q: %s: %s", q, resp.Status, body)
	}
	var r QueryResult
	if err := json.Unmarshal(body, &r); err != nil {
		return QueryResult{}, fmt.Errorf("influxql %q: %w", q, err)
	}
	for _, res := range r.Results {
		if res.Error != "" {
			return r, fmt.Errorf("influxql %q: %s", q, res.Error)
		}
	}
	return r, nil
}

// QueryResult is the JSON answer of InfluxDB 1.x /query.
type QueryResult struct {
	Results []struct {
		Error  string `json:"error"`
		Series []struct {
			Name    string            `json:"name"`
			Tags    map[string]string `json:"tags"`
			Columns []string          `json:"columns"`
			Values  [][]any           `json:"values"`
		} `json:"series"`
	} `json:"results"`
}

// Rows returns the values of every series of the first result.
func (r QueryResult) Rows() [][]any {
	var out [][]any
	if len(r.Results) == 0 {
		return nil
	}
	for _, s := range r.Results[0].Series {
		out = append(out, s.Values...)
	}
	return out
}

// Tool returns the path of an external program, or skips/fails as Missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name)
	}
	return p
}

// Eventually polls cond until it is true or timeout passes, then fails.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logger returns a logger that discards, or writes to stderr when
// TELEHUB_TEST_LOG is set (for debugging a failing test).
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("TELEHUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
