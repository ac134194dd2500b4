package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/ingest/store"
	"github.com/telehub/telehub/internal/testenv"
)

// crashTimeout bounds every wait of the proof, generously: `make test` runs
// it beside other packages on two cores.
const crashTimeout = 60 * time.Second

// TestCrashLosesNothingAcknowledged is the kill -9 proof. A telehub process
// storing in InfluxDB is killed while a fleet publishes QoS 1, and restarted
// on the same data directory and ports while InfluxDB is down, so that its
// writer cannot finish replaying the log; it is killed again in the middle of
// that replay, with acknowledged readings that only its log holds, restarted
// once more, and InfluxDB comes back. Every reading the devices saw
// acknowledged is in InfluxDB exactly once. Two SeqDevices publish beside
// the fleet: they know exactly which readings were acknowledged, so for
// them the proof is reading by reading.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	influxd := testenv.StartInfluxd(t)
	hub := newHubProcess(t, buildTelehub(t), influxd.Influx)
	hub.start(t)
	token, err := os.ReadFile(filepath.Join(hub.dataDir, "admin.token"))
	require.NoError(t, err)
	fleet := testenv.StartFleet(t, hub.url, "tcp://"+hub.mqtt, strings.TrimSpace(string(token)), "crash", crashTimeout)
	var witnesses []*testenv.SeqDevice
	for _, id := range []string{"witness-1", "witness-2"} {
		witnesses = append(witnesses, testenv.StartSeqDevice(t, testenv.SeqDeviceConfig{Broker: "tcp://" + hub.mqtt,
			ID: id, Token: hub.createDevice(t, id), Every: 50 * time.Millisecond}))
	}

	fleet.WaitAcked(t, 300)
	hub.kill(t) // 1: while the writer keeps up with InfluxDB
	influxd.Stop()
	hub.start(t)
	acked := fleet.Stats().Acked
	testenv.Eventually(t, crashTimeout, "the restarted hub replays and acknowledges with InfluxDB down", func() bool {
		return hub.metric(t, "telehub_store_retries_total") > 0 && fleet.Stats().Acked >= acked+200
	})
	require.Positive(t, hub.metric(t, "telehub_log_pending_records"), "the log holds readings InfluxDB has not confirmed")
	hub.kill(t) // 2: in the middle of a replay that cannot finish
	hub.start(t)
	acked = fleet.Stats().Acked
	fleet.WaitAcked(t, acked+200)
	influxd.Start()
	testenv.Eventually(t, crashTimeout, "the log drains into InfluxDB", func() bool {
		return hub.metric(t, "telehub_store_readings_written_total") > 0
	})
	st := fleet.Finish(t)
	for _, w := range witnesses {
		w.WaitAllAcked(t, crashTimeout)
	}
	for _, w := range witnesses {
		influxd.RequireSeqs(t, "telemetry", w, crashTimeout)
	}

	require.Len(t, st.Devices, 10)
	low, high := map[string]int{}, map[string]int{}
	for _, d := range st.Devices {
		require.Equal(t, d.Sent, d.Acked+d.Errors, "device %s: every reading settled", d.ID)
		low[d.ID], high[d.ID] = int(d.Acked), int(d.Sent)
	}
	// Each acknowledged reading stored (once: a point is a timestamp, and a
	// reading logged before the kill and resent after it overwrites itself).
	// A reading paho failed while the connection broke under it counts as
	// an error but is kept and resent, so it may be stored; with no error
	// the counts are exact.
	t.Logf("fleet: sent %d, acknowledged %d, failed %d", st.Sent, st.Acked, st.Errors)
	influxd.RequireCountsBetween(t, "telemetry", "rssi", low, high, crashTimeout)

	require.NoError(t, hub.stop(), "a clean shutdown after two crashes (and no data race in a -race build)")
	for run := 1; run <= hub.runs; run++ {
		b, err := os.ReadFile(hub.logPath(run))
		require.NoError(t, err)
		require.NotContains(t, string(b), "DATA RACE", "run %d", run)
	}
}

// TestCrashEmbeddedStoreLosesNothingAcknowledged is the kill -9 proof for
// the embedded store, whose head holds readings in memory until a flush
// (every 5 minutes by default, so never during this test but at a clean
// stop): the hub is killed while two devices publish, stopped cleanly, and
// killed again, so that two crashes lose heads whose readings only the
// durable log still has, the second on top of readings already flushed.
// After a clean stop the store file holds every reading the devices saw
// acknowledged, exactly once.
func TestCrashEmbeddedStoreLosesNothingAcknowledged(t *testing.T) {
	hub := newHubProcess(t, buildTelehub(t), testenv.Influx{})
	hub.start(t)
	var devs []*testenv.SeqDevice
	for _, id := range []string{"seq-1", "seq-2"} {
		devs = append(devs, testenv.StartSeqDevice(t, testenv.SeqDeviceConfig{Broker: "tcp://" + hub.mqtt,
			ID: id, Token: hub.createDevice(t, id), Every: 20 * time.Millisecond}))
	}
	for _, end := range []func(){func() { hub.kill(t) }, func() { require.NoError(t, hub.stop()) }, func() { hub.kill(t) }} {
		acked := devs[0].Acked()
		testenv.Eventually(t, crashTimeout, "readings acknowledged since the last start, some only in the head and the log", func() bool {
			return devs[0].Acked() >= acked+100 && hub.metric(t, "telehub_store_head_bytes") > 0
		})
		end()
		hub.start(t)
	}
	for _, d := range devs {
		d.WaitAllAcked(t, crashTimeout)
	}
	require.NoError(t, hub.stop())

	db, err := store.Open(filepath.Join(hub.dataDir, "history.db"), store.Options{})
	require.NoError(t, err)
	defer db.Close()
	for _, d := range devs {
		want := d.AckedSeqs()
		got, err := db.Query(d.ID, "seq", time.UnixMilli(d.Base-1), time.UnixMilli(d.Base+1e9))
		require.NoError(t, err)
		require.Equal(t, len(want), len(got), "device %s: readings stored (once each) and acknowledged", d.ID)
		for i, s := range got {
			require.Equal(t, ingest.Number(float64(want[i])), s.Value, "device %s reading %d", d.ID, i)
			require.Equal(t, d.Base+want[i], s.Time.UnixMilli(), "device %s reading %d", d.ID, i)
		}
	}
}

// buildTelehub builds this command into a temporary directory, with the race
// detector when the test has it.
func buildTelehub(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "the go command")
	}
	bin := filepath.Join(t.TempDir(), "telehub")
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	out, err := exec.Command(goBin, append(args, ".")...).CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

var readyClient = &http.Client{Timeout: 2 * time.Second}

// hubProcess is `telehub serve` run as a child process on fixed loopback
// ports and a data directory that outlive each run.
type hubProcess struct {
	bin     string
	args    []string
	dataDir string
	logDir  string
	mqtt    string // host:port
	url     string // http://host:port
	runs    int

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed
}

// newHubProcess prepares a hub storing in db, or in its embedded store when
// db has no URL.
func newHubProcess(t *testing.T, bin string, db testenv.Influx) *hubProcess {
	t.Helper()
	h := &hubProcess{bin: bin, dataDir: t.TempDir(), logDir: t.TempDir(),
		mqtt: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	h.url = "http://" + httpAddr
	h.args = []string{"serve", "--mqtt-addr", h.mqtt, "--http-addr", httpAddr, "--data-dir", h.dataDir}
	if db.URL != "" { // else the embedded store
		h.args = append(h.args, "--influx-url", db.URL, "--influx-bucket", db.Database)
	}
	t.Cleanup(func() {
		if h.cmd != nil {
			h.cmd.Process.Kill()
			<-h.exited
		}
		if t.Failed() {
			for run := 1; run <= h.runs; run++ {
				b, _ := os.ReadFile(h.logPath(run))
				t.Logf("telehub run %d log (last 4 KiB):\n%s", run, b[max(0, len(b)-4096):])
			}
		}
	})
	return h
}

func (h *hubProcess) logPath(run int) string {
	return filepath.Join(h.logDir, fmt.Sprintf("run-%d.log", run))
}

// start runs the hub and returns once it reports ready.
func (h *hubProcess) start(t *testing.T) {
	t.Helper()
	require.Nil(t, h.cmd, "hub already running")
	h.runs++
	logf, err := os.Create(h.logPath(h.runs))
	require.NoError(t, err)
	cmd := exec.Command(h.bin, h.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { // ends with the process: kill, stop or the cleanup ends it
		h.err = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	h.cmd, h.exited = cmd, exited
	testenv.Eventually(t, crashTimeout, "telehub ready", func() bool {
		select {
		case <-exited:
			h.cmd = nil
			b, _ := os.ReadFile(h.logPath(h.runs))
			t.Fatalf("telehub exited while starting: %v\n%s", h.err, b)
		default:
		}
		resp, err := readyClient.Get(h.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// createDevice registers a device through the API and returns its token.
func (h *hubProcess) createDevice(t *testing.T, id string) string {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(h.dataDir, "admin.token"))
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, h.url+"/api/v1/devices",
		strings.NewReader(fmt.Sprintf(`{"id":%q,"type":"thermostat"}`, id)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var out struct {
		Token string `json:"token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotEmpty(t, out.Token)
	return out.Token
}

// metric scrapes one of the hub's metrics.
func (h *hubProcess) metric(t *testing.T, name string) float64 {
	t.Helper()
	m, err := testenv.Metrics(h.url + "/metrics")
	require.NoError(t, err)
	v, ok := m[name]
	require.True(t, ok, "metric %s is not exported", name)
	return v
}

// kill ends the hub with SIGKILL, as a crash would, and waits for it.
func (h *hubProcess) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Signal(syscall.SIGKILL))
	<-h.exited
	h.cmd = nil
}

// stop asks the hub to shut down (SIGTERM) and returns its exit error.
func (h *hubProcess) stop() error {
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
		h.cmd = nil
		return errors.New("telehub did not stop within 30s of SIGTERM")
	}
	h.cmd = nil
	return h.err
}

// TestCrashKeepsAcknowledgedResultsAndState is the kill -9 proof for what
// devices answer: command results on devices/{id}/commands/{cid}/result and
// reported state on devices/{id}/state, both QoS 1. A device (paho, MQTT
// 3.1.1, clean session, so a publish's token succeeds only with its PUBACK)
// answers a burst of commands while it reports its state as fast as the
// hub acknowledges; the hub is killed the moment enough results are
// acknowledged, with both streams still going. After a restart every
// acknowledged result is stored (the command succeeded, with its result)
// and the stored reported state is the last acknowledged one or a later one.
func TestCrashKeepsAcknowledgedResultsAndState(t *testing.T) {
	const commands, killAfter = 60, 30
	hub := newHubProcess(t, buildTelehub(t), testenv.Influx{})
	hub.start(t)
	const id = "answerer"
	devToken := hub.createDevice(t, id)
	for i := range commands {
		hub.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", fmt.Sprintf(`{"name":"set","params":{"i":%d}}`, i), http.StatusAccepted, nil)
	}

	received := make(chan string, commands)
	lost := make(chan struct{})
	opts := paho.NewClientOptions().AddBroker("tcp://" + hub.mqtt).SetClientID(id).SetUsername(id).SetPassword(devToken).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	dev := paho.NewClient(opts)
	tok := dev.Connect()
	require.True(t, tok.WaitTimeout(crashTimeout) && tok.Error() == nil, "connect: %v", tok.Error())
	t.Cleanup(func() { dev.Disconnect(0) })

	var mu sync.Mutex
	var ackedResults []string
	lastState := -1 // the last state report acknowledged
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // answers each command as it arrives
		for {
			var cid string
			select {
			case cid = <-received:
			case <-stop:
				return
			}
			tok := dev.Publish("devices/"+id+"/commands/"+cid+"/result", 1, false, `{"status":"ok","result":{"done":"`+cid+`"}}`)
			if tok.WaitTimeout(crashTimeout) && tok.Error() == nil {
				mu.Lock()
				ackedResults = append(ackedResults, cid)
				mu.Unlock()
			}
		}
	})
	wg.Go(func() { // reports its state, one report after the other
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			tok := dev.Publish("devices/"+id+"/state", 1, false, fmt.Sprintf(`{"n":%d}`, n))
			if !tok.WaitTimeout(crashTimeout) || tok.Error() != nil {
				return
			}
			mu.Lock()
			lastState = n
			mu.Unlock()
		}
	})
	tok = dev.Subscribe("devices/"+id+"/commands/+", 1, func(_ paho.Client, m paho.Message) {
		received <- strings.TrimPrefix(m.Topic(), "devices/"+id+"/commands/")
	})
	require.True(t, tok.WaitTimeout(crashTimeout) && tok.Error() == nil, "subscribe: %v", tok.Error())

	testenv.Eventually(t, crashTimeout, "results and state reports acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ackedResults) >= killAfter && lastState >= 0
	})
	hub.kill(t)
	select { // what the hub wrote before it died is read before the loss
	case <-lost:
	case <-time.After(crashTimeout):
		t.Fatal("the device did not notice the hub's death")
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	results, state := slices.Clone(ackedResults), lastState
	mu.Unlock()
	t.Logf("acknowledged before the kill: %d of %d results, state reports up to n=%d", len(results), commands, state)

	hub.start(t)
	for _, cid := range results {
		var cmd struct {
			Status string          `json:"status"`
			Result json.RawMessage `json:"result"`
		}
		hub.api(t, http.MethodGet, "/api/v1/devices/"+id+"/commands/"+cid, "", http.StatusOK, &cmd)
		require.Equal(t, "succeeded", cmd.Status, "acknowledged result of command %s", cid)
		require.JSONEq(t, `{"done":"`+cid+`"}`, string(cmd.Result), "command %s", cid)
	}
	var st struct {
		Reported struct {
			N *int `json:"n"`
		} `json:"reported"`
	}
	hub.api(t, http.MethodGet, "/api/v1/devices/"+id+"/state", "", http.StatusOK, &st)
	require.NotNil(t, st.Reported.N, "a reported state is stored")
	require.GreaterOrEqual(t, *st.Reported.N, state, "the last acknowledged report (or a later one) is stored")
	require.NoError(t, hub.stop())
}

// api calls the hub's API with the admin token and decodes the answer into
// out (when not nil), requiring the status want.
func (h *hubProcess) api(t *testing.T, method, path, body string, want int, out any) {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(h.dataDir, "admin.token"))
	require.NoError(t, err)
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := readyClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, want, resp.StatusCode, "%s %s: %s", method, path, b)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out), "%s %s", method, path)
	}
}
