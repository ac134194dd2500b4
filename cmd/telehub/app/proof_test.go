package app

// The zero-loss proofs: a real hub, a real influxd, a simulated fleet of real
// MQTT clients, and the failures the guarantee is about (an InfluxDB outage,
// a full durable log, a reading InfluxDB refuses, a missing database). Each
// proof ends by comparing what InfluxDB holds with what the devices saw
// acknowledged. The crash proof (kill -9) is in cmd/telehub.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	firmwaresim "github.com/telehub/telehub/firmware-sim"
	"github.com/telehub/telehub/internal/mqttwire"
	"github.com/telehub/telehub/internal/testenv"
)

// proofTimeout bounds every wait of the proofs. Passing runs take a few
// seconds per phase; the bound is generous because `make test` runs them
// beside other packages on two cores.
const proofTimeout = 60 * time.Second

// TestProofInfluxOutage: influxd is stopped while a fleet publishes QoS 1 and
// started again. Every acknowledged reading ends up in InfluxDB exactly once,
// with the device's timestamp.
func TestProofInfluxOutage(t *testing.T) {
	influxd := testenv.StartInfluxd(t)
	writes := newWriteRecorder(t, influxd.URL)
	a := startProofHub(t, writes.URL(), influxd.Database, nil)
	fleet := testenv.StartFleet(t, "http://"+a.HTTPAddr(), "tcp://"+a.MQTTAddr(), a.AdminToken, "outage", proofTimeout)
	marker := startSeqDevices(t, a, "outage-marker", 1, 20*time.Millisecond, 0)[0]

	fleet.WaitAcked(t, 100)
	testenv.Eventually(t, proofTimeout, "the writer stored readings before the outage", func() bool {
		return proofMetric(t, a, "telehub_store_readings_written_total") > 0
	})

	influxd.Stop()
	down := fleet.Stats().Acked
	// Keep publishing while InfluxDB is down, until the writer has failed and
	// a good number of readings were acknowledged that only the log holds.
	testenv.Eventually(t, proofTimeout, "readings acknowledged while InfluxDB is down", func() bool {
		return fleet.Stats().Acked >= down+300 && proofMetric(t, a, "telehub_store_retries_total") > 0
	})
	require.Positive(t, proofMetric(t, a, "telehub_log_pending_records"), "the log holds what InfluxDB has not confirmed")

	influxd.Start()
	up := fleet.Stats().Sent
	fleet.WaitAcked(t, up+200)
	st := fleet.Finish(t)
	marker.WaitAllAcked(t, proofTimeout)

	want := requireAllAcked(t, st)
	influxd.RequireCounts(t, "telemetry", "rssi", want, proofTimeout)
	influxd.RequireSeqs(t, "telemetry", marker, proofTimeout)

	// None was confirmed by InfluxDB twice. (The writer keeps several
	// batches in flight, so their order at InfluxDB is not the log's.)
	want[marker.ID] = marker.Acked()
	perDev := writes.timestamps(t)
	require.Len(t, perDev, len(want))
	for id, ts := range perDev {
		require.Len(t, ts, want[id], "device %s: readings InfluxDB confirmed", id)
		slices.Sort(ts)
		for i := 1; i < len(ts); i++ {
			require.Greater(t, ts[i], ts[i-1], "device %s: a reading confirmed twice", id)
		}
	}
	require.Zero(t, proofMetric(t, a, "telehub_store_dead_letters_total"))
}

// TestProofFullLog: with a tiny log and InfluxDB down, devices are pushed
// back instead of acknowledged and dropped: MQTT 3 devices get no PUBACK and
// are disconnected, so paho resends; MQTT 5 devices get PUBACK 0x97. When
// InfluxDB returns, ingest recovers by itself and every reading is stored
// exactly once. The devices are SeqDevices, which know exactly which
// readings were acknowledged (the simulated fleet counts paho's tokens, which
// a reconnect completes without a PUBACK).
func TestProofFullLog(t *testing.T) {
	influxd := testenv.StartInfluxd(t)
	a := startProofHub(t, influxd.URL, influxd.Database, func(c *config.Config) { c.WAL.MaxBytes = 64 << 10 })
	influxd.Stop()
	// 20 devices, each well under the hub's default message rate (100/s,
	// bursts of 200) even when it resends its backlog after the outage;
	// padded readings fill the log in about a second.
	devs := startSeqDevices(t, a, "full", 20, 100*time.Millisecond, 200)
	v5 := dialMQTT5(t, a, "full-v5")
	base := time.Now().Add(-time.Hour).UnixMilli()

	testenv.Eventually(t, proofTimeout, "log full and devices pushed back", func() bool {
		m := proofMetrics(t, a)
		return m["telehub_log_full"] == 1 && m[`telehub_ingest_rejected_total{reason="log_full"}`] > 0
	})
	// While the log is full nothing is accepted or acknowledged, however
	// often the devices resend.
	refusedMore := func(n float64) {
		t.Helper()
		refused := proofMetric(t, a, `telehub_ingest_rejected_total{reason="log_full"}`)
		testenv.Eventually(t, proofTimeout, "devices keep resending and are refused", func() bool {
			return proofMetric(t, a, `telehub_ingest_rejected_total{reason="log_full"}`) >= refused+n
		})
	}
	refusedMore(50)
	accepted, acked := proofMetric(t, a, "telehub_ingest_payloads_total"), sumAcked(devs)
	// An MQTT 5 device is told why: PUBACK reason 0x97, quota exceeded.
	require.Equal(t, packets.ErrQuotaExceeded.Code, v5.publish(t, "devices/full-v5/telemetry", fmt.Sprintf(`{"ts":%d,"v5":0}`, base)))
	refusedMore(50)
	m := proofMetrics(t, a)
	require.Equal(t, accepted, m["telehub_ingest_payloads_total"], "no reading accepted while the log is full")
	require.Equal(t, acked, sumAcked(devs), "no reading acknowledged while the log is full")
	require.LessOrEqual(t, float64(acked), accepted, "every acknowledgement is of a logged reading")
	require.Equal(t, float64(1), m["telehub_log_full"])
	require.LessOrEqual(t, m["telehub_log_bytes"], m["telehub_log_max_bytes"]+16<<10, "the log stays near its bound")

	influxd.Start()
	testenv.Eventually(t, proofTimeout, "the log drains once InfluxDB is back", func() bool {
		return proofMetric(t, a, "telehub_log_full") == 0
	})
	sent := sumSent(devs)
	testenv.Eventually(t, proofTimeout, "devices acknowledged again", func() bool { return sumAcked(devs) >= sent+100 })
	// The devices' resent backlog may fill the tiny log again for a moment;
	// the MQTT 5 device is refused (0x97) meanwhile and then acknowledged.
	// The same reading each time, so it is stored once however often it is
	// sent.
	testenv.Eventually(t, proofTimeout, "the MQTT 5 device acknowledged again", func() bool {
		return v5.publish(t, "devices/full-v5/telemetry", fmt.Sprintf(`{"ts":%d,"v5":1}`, base+1)) == packets.CodeSuccess.Code
	})
	for _, d := range devs {
		d.WaitAllAcked(t, proofTimeout)
	}
	for _, d := range devs {
		influxd.RequireSeqs(t, "telemetry", d, proofTimeout)
	}
	influxd.RequireCounts(t, "telemetry", "v5", map[string]int{"full-v5": 1}, proofTimeout)
	require.Zero(t, proofMetric(t, a, "telehub_log_full"))
	require.Zero(t, proofMetric(t, a, "telehub_store_dead_letters_total"))
}

// TestProofPoisonReading: a reading InfluxDB refuses for good (a field type
// conflict) goes to the dead-letter file with the reason, and blocks neither
// the readings after it in the same payload, nor the device's later
// readings, nor other devices.
func TestProofPoisonReading(t *testing.T) {
	db := testenv.NewInflux(t)
	dir := t.TempDir()
	a := startProofHubIn(t, dir, db.URL, db.Database, nil)
	p1, err := connect(t, a, "poison-1", createDevice(t, a, "poison-1", "thermostat"))
	require.NoError(t, err)
	p2, err := connect(t, a, "poison-2", createDevice(t, a, "poison-2", "thermostat"))
	require.NoError(t, err)

	base := time.Now().Add(-time.Minute).UnixMilli()
	require.NoError(t, publish(t, p1, "devices/poison-1/telemetry", fmt.Sprintf(`{"ts":%d,"temperature":21}`, base)))
	testenv.Eventually(t, proofTimeout, "the first reading fixes the field's type", func() bool {
		return len(temperatures(t, db, "poison-1")) == 1
	})
	// The poison and a good reading in one payload: one log record, so they
	// are always in the same batch.
	require.NoError(t, publish(t, p1, "devices/poison-1/telemetry",
		fmt.Sprintf(`[{"ts":%d,"temperature":"hot"},{"ts":%d,"temperature":22}]`, base+1, base+2)))
	require.NoError(t, publish(t, p2, "devices/poison-2/telemetry", fmt.Sprintf(`{"ts":%d,"temperature":23}`, base+3)))
	require.NoError(t, publish(t, p1, "devices/poison-1/telemetry", fmt.Sprintf(`{"ts":%d,"temperature":24}`, base+4)))

	testenv.Eventually(t, proofTimeout, "the readings around the poison are stored", func() bool {
		return len(temperatures(t, db, "poison-1")) == 3 && len(temperatures(t, db, "poison-2")) == 1
	})
	require.Equal(t, [][2]any{{base, 21.0}, {base + 2, 22.0}, {base + 4, 24.0}}, temperatures(t, db, "poison-1"))
	require.Equal(t, [][2]any{{base + 3, 23.0}}, temperatures(t, db, "poison-2"))

	testenv.Eventually(t, proofTimeout, "the writer has moved past everything", func() bool {
		return proofMetric(t, a, "telehub_log_pending_records") == 0
	})
	require.Equal(t, float64(1), proofMetric(t, a, "telehub_store_dead_letters_total"))
	b, err := os.ReadFile(filepath.Join(dir, "dead-letters.jsonl"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 1)
	var dl struct {
		Reason   string         `json:"reason"`
		DeviceID string         `json:"device_id"`
		TS       time.Time      `json:"ts"`
		Fields   map[string]any `json:"fields"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &dl))
	require.Equal(t, "poison-1", dl.DeviceID)
	require.Equal(t, map[string]any{"temperature": "hot"}, dl.Fields)
	require.Equal(t, base+1, dl.TS.UnixMilli())
	require.Contains(t, dl.Reason, "field type conflict")
}

// TestProofMissingDatabase: InfluxDB answering 404 (database or bucket not
// found, as while a deployment is still creating it) is a problem of the
// store, not of the readings: they wait in the log, none is dead-lettered,
// and all are stored once the database exists.
func TestProofMissingDatabase(t *testing.T) {
	shared := testenv.NewInflux(t) // only for its server
	db := testenv.Influx{URL: shared.URL, Database: shared.Database + "_late"}
	t.Cleanup(func() { db.InfluxQL("DROP DATABASE " + db.Database) })
	dir := t.TempDir()
	a := startProofHubIn(t, dir, db.URL, db.Database, nil)
	c, err := connect(t, a, "late-1", createDevice(t, a, "late-1", "thermostat"))
	require.NoError(t, err)
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 20 {
		require.NoError(t, publish(t, c, "devices/late-1/telemetry", fmt.Sprintf(`{"ts":%d,"temperature":%d}`, base+int64(i), i)))
	}
	testenv.Eventually(t, proofTimeout, "the writer tried the missing database", func() bool {
		m := proofMetrics(t, a)
		return m["telehub_store_retries_total"] > 0 || m["telehub_store_dead_letters_total"] > 0
	})
	require.Zero(t, proofMetric(t, a, "telehub_store_dead_letters_total"), "a missing database is no reason to give readings up")

	_, err = db.InfluxQL("CREATE DATABASE " + db.Database)
	require.NoError(t, err)
	db.RequireCounts(t, "telemetry", "temperature", map[string]int{"late-1": 20}, proofTimeout)
	require.Zero(t, proofMetric(t, a, "telehub_store_dead_letters_total"))
	require.NoFileExists(t, filepath.Join(dir, "dead-letters.jsonl"))
}

// startProofHub runs a hub on loopback ports storing in InfluxDB, with store
// retries capped low so that it notices a returning InfluxDB quickly.
func startProofHub(t *testing.T, influxURL, database string, tune func(*config.Config)) *App {
	t.Helper()
	return startProofHubIn(t, t.TempDir(), influxURL, database, tune)
}

func startProofHubIn(t *testing.T, dir, influxURL, database string, tune func(*config.Config)) *App {
	t.Helper()
	return startHubWith(t, dir, func(cfg *config.Config) {
		cfg.Influx.URL, cfg.Influx.Bucket = influxURL, database
		cfg.Writer.RetryMax = 500 * time.Millisecond
		if tune != nil {
			tune(cfg)
		}
	})
}

func proofMetrics(t *testing.T, a *App) map[string]float64 {
	t.Helper()
	m, err := testenv.Metrics("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	return m
}

func proofMetric(t *testing.T, a *App, name string) float64 {
	t.Helper()
	m := proofMetrics(t, a)
	v, ok := m[name]
	require.True(t, ok, "metric %s is not exported", name)
	return v
}

// requireAllAcked checks that every reading the fleet took was acknowledged
// and returns the acknowledged count per device.
func requireAllAcked(t *testing.T, st firmwaresim.Stats) map[string]int {
	t.Helper()
	require.Len(t, st.Devices, 10)
	require.Zero(t, st.Errors, "no reading may fail")
	want := map[string]int{}
	for _, d := range st.Devices {
		require.Equal(t, d.Sent, d.Acked, "device %s: every reading acknowledged", d.ID)
		want[d.ID] = int(d.Acked)
	}
	return want
}

// startSeqDevices registers n devices named prefix-1 … prefix-n (just
// prefix when n is 1) and starts them publishing every interval, each
// reading padded by pad bytes.
func startSeqDevices(t *testing.T, a *App, prefix string, n int, every time.Duration, pad int) []*testenv.SeqDevice {
	t.Helper()
	devs := make([]*testenv.SeqDevice, n)
	for i := range devs {
		id := prefix
		if n > 1 {
			id = fmt.Sprintf("%s-%d", prefix, i+1)
		}
		devs[i] = testenv.StartSeqDevice(t, testenv.SeqDeviceConfig{Broker: "tcp://" + a.MQTTAddr(), ID: id,
			Token: createDevice(t, a, id, "thermostat"), Every: every, PadBytes: pad})
	}
	return devs
}

func sumAcked(devs []*testenv.SeqDevice) (n int) {
	for _, d := range devs {
		n += d.Acked()
	}
	return n
}

func sumSent(devs []*testenv.SeqDevice) (n int) {
	for _, d := range devs {
		n += d.Sent()
	}
	return n
}

// temperatures returns a device's stored temperatures as (Unix ms, value)
// pairs. (Nanosecond times pass through JSON as float64, exact to well under
// a millisecond.)
func temperatures(t *testing.T, db testenv.Influx, id string) [][2]any {
	t.Helper()
	r, err := db.InfluxQL(fmt.Sprintf(`SELECT temperature FROM telemetry WHERE device_id = '%s' ORDER BY time`, id))
	require.NoError(t, err)
	var out [][2]any
	for _, row := range r.Rows() {
		ns, _ := row[0].(float64)
		out = append(out, [2]any{int64(math.Round(ns / 1e6)), row[1]})
	}
	return out
}

// mqtt5Device is a device speaking MQTT 5 (paho.mqtt.golang speaks only
// 3.1.1) over mqttwire: enough to connect, publish QoS 1 and read the
// PUBACK's reason code.
type mqtt5Device struct {
	c  *mqttwire.Conn
	id uint16
}

func dialMQTT5(t *testing.T, a *App, id string) *mqtt5Device {
	t.Helper()
	return dialMQTT5As(t, a, id, createDevice(t, a, id, "thermostat"))
}

// dialMQTT5As connects a registered device over MQTT 5 with its token.
func dialMQTT5As(t *testing.T, a *App, id, token string) *mqtt5Device {
	t.Helper()
	c, err := mqttwire.Dial(t.Context(), a.MQTTAddr(), 5, func(pk *packets.Packet) {
		pk.Connect.ClientIdentifier, pk.Connect.Username, pk.Connect.Password = id, []byte(id), []byte(token)
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	d := &mqtt5Device{c: c}
	ack := d.read(t)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode, "MQTT 5 connect")
	return d
}

// read reads one packet.
func (d *mqtt5Device) read(t *testing.T) packets.Packet {
	t.Helper()
	pk, err := d.c.Read(10 * time.Second)
	require.NoError(t, err)
	return pk
}

// publish sends a QoS 1 PUBLISH and returns the reason code of its PUBACK.
func (d *mqtt5Device) publish(t *testing.T, topic, payload string) byte {
	t.Helper()
	d.id++
	require.NoError(t, d.c.Publish(topic, 1, false, d.id, 0, []byte(payload), packets.Properties{}))
	for {
		ack := d.read(t)
		if ack.FixedHeader.Type == packets.Puback && ack.PacketID == d.id {
			return ack.ReasonCode
		}
	}
}

// writeRecorder is an HTTP proxy in front of influxd that keeps, in order,
// the bodies of the writes InfluxDB confirmed, so a test sees the order in
// which the hub wrote readings. While influxd is down it drops the hub's
// connection, as a stopped server does.
type writeRecorder struct {
	target string
	srv    *httptest.Server
	client *http.Client

	mu     sync.Mutex
	bodies [][]byte
}

func newWriteRecorder(t *testing.T, target string) *writeRecorder {
	t.Helper()
	w := &writeRecorder{target: target, client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	w.srv = httptest.NewServer(w)
	t.Cleanup(w.srv.Close)
	return w
}

// URL returns the proxy's base URL.
func (w *writeRecorder) URL() string { return w.srv.URL }

func (w *writeRecorder) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, w.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := w.client.Do(out)
	if err != nil {
		if hj, ok := rw.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	if r.URL.Path == "/api/v2/write" && resp.StatusCode/100 == 2 {
		w.mu.Lock()
		w.bodies = append(w.bodies, body)
		w.mu.Unlock()
	}
	for k, vs := range resp.Header {
		rw.Header()[k] = vs
	}
	rw.WriteHeader(resp.StatusCode)
	rw.Write(rb)
}

// timestamps returns, per device, the timestamps of the readings InfluxDB
// confirmed, in the order they were written.
func (w *writeRecorder) timestamps(t *testing.T) map[string][]int64 {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]int64{}
	for _, body := range w.bodies {
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, id, ok := strings.Cut(line, ",device_id=")
			require.True(t, ok, "line without device_id: %s", line)
			id, _, _ = strings.Cut(id, ",")
			id, _, _ = strings.Cut(id, " ")
			ts, err := strconv.ParseInt(line[strings.LastIndexByte(line, ' ')+1:], 10, 64)
			require.NoError(t, err, line)
			out[id] = append(out[id], ts)
		}
		require.NoError(t, sc.Err())
	}
	return out
}
