package app

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	devcontrol "github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/internal/testenv"
)

// uplink is a TCP proxy between an edge and its upstream that a test can
// cut (every connection closed, new ones refused) and restore.
type uplink struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newUplink(t *testing.T, target string) *uplink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &uplink{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	u.wg.Go(u.accept)
	t.Cleanup(func() { ln.Close(); u.cut(); u.wg.Wait() })
	return u
}

func (u *uplink) addr() string { return u.ln.Addr().String() }

func (u *uplink) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		if u.down.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", u.target)
		if err != nil {
			c.Close()
			continue
		}
		u.mu.Lock()
		u.conns[c], u.conns[up] = struct{}{}, struct{}{}
		u.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		u.wg.Go(func() { pipe(up, c) })
		u.wg.Go(func() { pipe(c, up) })
	}
}

// cut closes every proxied connection and refuses new ones until restore.
func (u *uplink) cut() {
	u.down.Store(true)
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		c.Close()
	}
	clear(u.conns)
}

func (u *uplink) restore() { u.down.Store(false) }

// startEdgePair starts an upstream hub with an integration for the edge
// (telemetry, command results and reported state it may publish, commands and desired
// state it may subscribe to) and an edge hub forwarding to it over TLS through a
// cuttable uplink. edit changes the upstream's configuration.
func startEdgePair(t *testing.T, editUpstream func(*config.Config)) (up, edge *App, link *uplink) {
	t.Helper()
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "127.0.0.1")
	tlsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	up = startHubWith(t, t.TempDir(), func(c *config.Config) {
		c.MQTT.TLSAddr, c.MQTT.TLSCert, c.MQTT.TLSKey = tlsAddr, cert, key
		if editUpstream != nil {
			editUpstream(c)
		}
	})
	_, secret, err := up.integrations.Create(devices.Integration{ID: "edge-1",
		Publish:   []string{"devices/+/telemetry", "devices/+/commands/+/result", "devices/+/state"},
		Subscribe: []string{"devices/+/commands/+", "devices/+/state/desired"}}, "test")
	require.NoError(t, err)
	secretFile := filepath.Join(t.TempDir(), "upstream.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	link = newUplink(t, tlsAddr)
	edge = startHubWith(t, t.TempDir(), func(c *config.Config) {
		c.Forward.URL = "mqtts://" + link.addr()
		c.Forward.Username, c.Forward.PasswordFile, c.Forward.CAFile = "edge-1", secretFile, pki.CAFile
		c.Forward.ClientID = "edge-1"
		c.Forward.RetryMin, c.Forward.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	})
	return up, edge, link
}

func metricOf(t *testing.T, a *App, name string) float64 {
	t.Helper()
	m, err := testenv.Metrics("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	return m[name]
}

// TestForwardRoutesUpstreamCommandsDown: a command sent to the upstream's
// API for a device connected only to the edge (a simulated thermostat)
// goes sent → delivered (the edge took it) → succeeded with the device's
// result; an unknown command fails with the device's reason; a command sent
// while the uplink is cut waits queued upstream and completes once the
// uplink returns. On the edge each is one local command, keyed by the
// upstream's command ID.
func TestForwardRoutesUpstreamCommandsDown(t *testing.T) {
	up, edge, link := startEdgePair(t, nil)
	const dev = "fc-thermo-0001"
	createDevice(t, up, dev, "thermostat")
	startSimFleet(t, edge, "fc", 1, 0, nil) // registers and connects the device at the edge only
	testenv.Eventually(t, 10*time.Second, "uplink connected", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 1
	})

	c := sendCmd(t, up, dev, `{"name":"set_setpoint","params":{"value":27.5},"timeout":"30s"}`)
	c = waitCmd(t, up, dev, c.ID, "succeeded")
	require.Equal(t, []string{"sent", "delivered", "succeeded"}, c.statuses()[len(c.statuses())-3:])
	require.Equal(t, 27.5, c.Result["setpoint"], "the device's own result")
	require.Equal(t, "result_topic", c.ResultVia)
	require.Equal(t, 1, c.Attempts)

	local := edgeCommand(t, edge, dev, c.ID)
	require.Equal(t, devcontrol.StatusSucceeded, local.Status)
	require.Equal(t, "set_setpoint", local.Name)
	require.Contains(t, local.CreatedBy, "upstream")

	bad := sendCmd(t, up, dev, `{"name":"self_destruct","timeout":"30s"}`)
	bad = waitCmd(t, up, dev, bad.ID, "failed")
	require.Contains(t, bad.Error, "refused by the edge hub", "the edge's schema refuses it: %s", bad.Error)
	require.Contains(t, bad.Error, "self_destruct")

	// Without a schema at the edge the device itself refuses it.
	status, _, b := ctlCall(t, edge, edge.AdminToken, "DELETE", "/api/v1/device-types/thermostat/commands", "")
	require.Less(t, status, 300, "%s", b)
	bad = sendCmd(t, up, dev, `{"name":"self_destruct","timeout":"30s"}`)
	bad = waitCmd(t, up, dev, bad.ID, "failed")
	require.Contains(t, bad.Error, "unknown command", "the device's reason: %s", bad.Error)
	require.Equal(t, devcontrol.StatusFailed, edgeCommand(t, edge, dev, bad.ID).Status)

	// Uplink cut: the upstream keeps the command queued.
	link.cut()
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 0
	})
	late := sendCmd(t, up, dev, `{"name":"set_mode","params":{"mode":"off"},"timeout":"30s"}`)
	require.Equal(t, "queued", late.Status)
	require.Equal(t, "queued", getCmd(t, up, dev, late.ID).Status, "no route while the uplink is down")
	link.restore()
	late = waitCmd(t, up, dev, late.ID, "succeeded")
	require.Equal(t, "off", late.Result["mode"])
	require.Equal(t, []string{"queued", "sent", "delivered", "succeeded"}, late.statuses())

	require.Len(t, edgeCommands(t, edge, dev), 3, "each upstream command the edge accepted is one command there")
	require.Equal(t, 3.0, metricOf(t, edge, `telehub_forward_commands_total{outcome="queued"}`))
	require.Equal(t, 1.0, metricOf(t, edge, `telehub_forward_commands_total{outcome="refused"}`))
	testenv.Eventually(t, 10*time.Second, "the results the upstream acknowledged counted", func() bool {
		return metricOf(t, edge, "telehub_forward_command_results_total") >= 4 // counted at the upstream's PUBACK
	})
}

// TestRelayedResultsNeedTheACL: a device cannot answer another device's
// command, nor can an integration that may only read commands (a monitor);
// neither makes the command delivered. An integration whose ACL covers the
// result topic answers it.
func TestRelayedResultsNeedTheACL(t *testing.T) {
	a := startHub(t, nil)
	const dev = "acl-t1"
	createDevice(t, a, dev, "thermostat")
	otherToken := createDevice(t, a, "acl-t2", "thermostat")
	_, monSecret, err := a.integrations.Create(devices.Integration{ID: "monitor", Subscribe: []string{"devices/#"}}, "test")
	require.NoError(t, err)
	_, relSecret, err := a.integrations.Create(devices.Integration{ID: "relay",
		Publish: []string{"devices/" + dev + "/commands/+/result"}, Subscribe: []string{"devices/" + dev + "/commands/+"}}, "test")
	require.NoError(t, err)

	mon, err := connect(t, a, "monitor", monSecret)
	require.NoError(t, err)
	tok := mon.Subscribe("devices/#", 1, func(paho.Client, paho.Message) {}) // acknowledged
	require.True(t, tok.WaitTimeout(5*time.Second))
	c := sendCmd(t, a, dev, `{"name":"set_mode","params":{"mode":"off"},"timeout":"30s"}`)
	require.Equal(t, "queued", getCmd(t, a, dev, c.ID).Status, "a monitor is no route to the device")

	other, err := connect(t, a, "acl-t2", otherToken)
	require.NoError(t, err)
	_ = publish(t, other, "devices/"+dev+"/commands/"+c.ID+"/result", `{"status":"ok"}`) // refused by the ACL
	require.Equal(t, "queued", getCmd(t, a, dev, c.ID).Status, "another device cannot answer")

	rel, err := connect(t, a, "relay", relSecret)
	require.NoError(t, err)
	tok = rel.Subscribe("devices/"+dev+"/commands/+", 1, func(paho.Client, paho.Message) {}) // acknowledged
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	waitCmd(t, a, dev, c.ID, "delivered")
	require.NoError(t, publish(t, rel, "devices/"+dev+"/commands/"+c.ID+"/result", `{"status":"ok","result":{"mode":"off"}}`))
	done := waitCmd(t, a, dev, c.ID, "succeeded")
	require.Equal(t, "off", done.Result["mode"])
}

// edgeCommands lists a device's commands at the edge.
func edgeCommands(t *testing.T, edge *App, dev string) []devcontrol.Command {
	t.Helper()
	return edge.control.commands.List(dev, devcontrol.CommandFilter{})
}

// edgeCommand returns the edge's command made for an upstream command.
func edgeCommand(t *testing.T, edge *App, dev, upstreamID string) devcontrol.Command {
	t.Helper()
	for _, c := range edgeCommands(t, edge, dev) {
		if strings.TrimPrefix(c.IdempotencyKey, "upstream:") == upstreamID {
			return c
		}
	}
	require.NoError(t, errors.New("no edge command for upstream command "+upstreamID))
	return devcontrol.Command{}
}

// TestForwardUplinkCutExactlyOnceInInflux is the proof: an edge
// forwards to an upstream that stores to InfluxDB; the upstream is stopped
// under load and restarted on the same port and data directory. Every
// reading the edge acknowledged is in the upstream's InfluxDB exactly once,
// at its own timestamp (counted per device with InfluxQL), and nothing else.
func TestForwardUplinkCutExactlyOnceInInflux(t *testing.T) {
	influxd := testenv.StartInfluxd(t)
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "127.0.0.1")
	upDir := t.TempDir()
	tlsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	upstreamCfg := func(c *config.Config) {
		c.MQTT.TLSAddr, c.MQTT.TLSCert, c.MQTT.TLSKey = tlsAddr, cert, key
		c.Influx.URL, c.Influx.Bucket = influxd.URL, influxd.Database
	}
	up := startHubWith(t, upDir, upstreamCfg)
	_, secret, err := up.integrations.Create(devices.Integration{ID: "edge-1", Publish: []string{"devices/+/telemetry"}}, "test")
	require.NoError(t, err)
	secretFile := filepath.Join(t.TempDir(), "upstream.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	edge := startHubWith(t, t.TempDir(), func(c *config.Config) {
		c.Forward.URL = "mqtts://" + tlsAddr
		c.Forward.Username, c.Forward.PasswordFile, c.Forward.CAFile = "edge-1", secretFile, pki.CAFile
		c.Forward.ClientID = "edge-1"
		c.Forward.RetryMin, c.Forward.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	})
	const n = 3
	for i := range n {
		createDevice(t, up, "fx-"+strconv.Itoa(i+1), "thermostat")
	}
	devs := startSeqDevices(t, edge, "fx", n, 10*time.Millisecond, 0)
	acked := func(more int) func() bool {
		want := sumAcked(devs) + more
		return func() bool { return sumAcked(devs) >= want }
	}

	testenv.Eventually(t, 10*time.Second, "readings reach the upstream's InfluxDB", func() bool {
		got, err := influxd.CountByDevice("telemetry", "seq")
		return err == nil && len(got) == n
	})
	up.Stop() // uplink cut under load
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 0
	})
	testenv.Eventually(t, 10*time.Second, "the edge keeps acknowledging", acked(100))
	require.Positive(t, metricOf(t, edge, "telehub_forward_lag_records"))

	startHubWith(t, upDir, upstreamCfg) // restored
	testenv.Eventually(t, 10*time.Second, "the edge reconnects", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 1
	})
	testenv.Eventually(t, 10*time.Second, "load after the restore", acked(60))
	want := map[string]int{}
	for _, d := range devs {
		d.StopPublishing()
		d.WaitAllAcked(t, 10*time.Second)
		want[d.ID] = d.Acked()
	}
	influxd.RequireCounts(t, "telemetry", "seq", want, 20*time.Second)
	for _, d := range devs {
		influxd.RequireSeqs(t, "telemetry", d, 5*time.Second)
	}
	testenv.Eventually(t, 10*time.Second, "the edge's backlog is drained", func() bool {
		return metricOf(t, edge, "telehub_forward_lag_records") == 0
	})
}
