package rules

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
)

// harness runs an engine on a real state database, registry and live hub.
// Build it inside a synctest bubble: time is then the bubble's fake clock.
type harness struct {
	t       *testing.T
	dir     string
	db      *bolt.DB
	reg     *devices.Registry
	hub     *live.Hub
	metrics *prometheus.Registry
	e       *Engine
	seen    uint64 // live stream position of events()
}

func testConfig() Config {
	c := DefaultConfig()
	c.FlapThreshold = 0
	return c
}

func newHarness(t *testing.T, cfg Config, declared ...Spec) *harness {
	t.Helper()
	return openHarness(t, t.TempDir(), cfg, declared...)
}

func openHarness(t *testing.T, dir string, cfg Config, declared ...Spec) *harness {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	require.NoError(t, err)
	reg, err := devices.New(db)
	require.NoError(t, err)
	h := &harness{t: t, dir: dir, db: db, reg: reg, hub: live.New(4096), metrics: prometheus.NewRegistry()}
	h.e, err = New(cfg, declared, Deps{DB: db, Devices: reg, Live: h.hub, Metrics: h.metrics,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	h.e.Start(context.Background())
	t.Cleanup(h.close)
	return h
}

// close stops the engine and closes the database; safe to call twice.
func (h *harness) close() {
	h.e.Stop()
	h.db.Close()
}

// reopen simulates a restart: a new engine on the same database.
func (h *harness) reopen(cfg Config, declared ...Spec) *harness {
	h.close()
	return openHarness(h.t, h.dir, cfg, declared...)
}

func (h *harness) device(id, typ string, labels map[string]string) {
	h.t.Helper()
	if _, ok := h.reg.Get(id); ok {
		return
	}
	_, _, err := h.reg.Create(devices.Device{ID: id, Type: typ, Labels: labels})
	require.NoError(h.t, err)
}

func (h *harness) rule(js string) Rule {
	h.t.Helper()
	s, err := ParseRule([]byte(js))
	require.NoError(h.t, err)
	r, err := h.e.CreateRule(s, "test")
	require.NoError(h.t, err)
	return r
}

// send feeds one reading of one field, stamped now.
func (h *harness) send(id, field string, v ingest.Value) {
	d, ok := h.reg.Get(id)
	require.True(h.t, ok, "device %s registered", id)
	h.e.Observe(ingest.Device{ID: d.ID, Type: d.Type}, []ingest.Point{{Time: time.Now(), Fields: []ingest.Field{{Name: field, Value: v}}}})
}

// wait advances the fake clock by d and lets the engine act on it.
func (h *harness) wait(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// state returns the state of the rule's newest alert on the device, "" when
// it has none.
func (h *harness) state(ruleID, dev string) string {
	as := h.e.Alerts(Filter{RuleID: ruleID, DeviceID: dev})
	if len(as) == 0 {
		return ""
	}
	return as[0].State
}

// events returns the alert events published since the last call.
func (h *harness) events() []Event {
	h.t.Helper()
	msgs, missed := h.hub.Read(h.seen, nil, 1<<20)
	require.Zero(h.t, missed)
	var out []Event
	for _, m := range msgs {
		h.seen = m.Seq
		if m.Kind != live.KindAlert {
			continue
		}
		var body struct {
			Alert Event `json:"alert"`
		}
		require.NoError(h.t, json.Unmarshal(m.Body, &body))
		out = append(out, body.Alert)
	}
	return out
}

// changes returns the changes of the events since the last call.
func (h *harness) changes() []string {
	var out []string
	for _, ev := range h.events() {
		out = append(out, ev.Change)
	}
	return out
}
