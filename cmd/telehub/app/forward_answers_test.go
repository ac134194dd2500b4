package app

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/testenv"
)

// TestForwardAnswerSurvivesEdgeRestart: a device behind the edge answers a
// command from the upstream while the uplink is cut, and the edge stops
// before the uplink returns. The edge that starts again on the same data
// directory sends the answer, and the upstream's command succeeds with the
// device's result; once acknowledged it is not sent again after another
// restart.
func TestForwardAnswerSurvivesEdgeRestart(t *testing.T) {
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "127.0.0.1")
	tlsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	up := startHubWith(t, t.TempDir(), func(c *config.Config) {
		c.MQTT.TLSAddr, c.MQTT.TLSCert, c.MQTT.TLSKey = tlsAddr, cert, key
	})
	_, secret, err := up.integrations.Create(devices.Integration{ID: "edge-1",
		Publish:   []string{"devices/+/telemetry", "devices/+/commands/+/result"},
		Subscribe: []string{"devices/+/commands/+"}}, "test")
	require.NoError(t, err)
	secretFile := filepath.Join(t.TempDir(), "upstream.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	link := newUplink(t, tlsAddr)
	edgeDir := t.TempDir()
	edgeCfg := func(c *config.Config) {
		c.Forward.URL = "mqtts://" + link.addr()
		c.Forward.Username, c.Forward.PasswordFile, c.Forward.CAFile = "edge-1", secretFile, pki.CAFile
		c.Forward.ClientID = "edge-1"
		c.Forward.RetryMin, c.Forward.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	edge := startHubWith(t, edgeDir, edgeCfg)

	const dev = "fa-t1"
	createDevice(t, up, dev, "thermostat")
	token := createDevice(t, edge, dev, "thermostat")
	device, err := connect(t, edge, dev, token) // the device, connected to the edge only
	require.NoError(t, err)
	got := make(chan string, 4)
	tok := device.Subscribe("devices/"+dev+"/commands/+", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	testenv.Eventually(t, 10*time.Second, "uplink connected", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 1
	})

	c := sendCmd(t, up, dev, `{"name":"set_setpoint","params":{"value":21.5},"timeout":"60s"}`)
	var topic string
	select {
	case topic = <-got:
	case <-time.After(15 * time.Second):
		require.FailNow(t, "the command did not reach the device through the edge")
	}
	waitCmd(t, up, dev, c.ID, "delivered")
	local := edgeCommand(t, edge, dev, c.ID)

	link.cut()
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 0
	})
	require.NoError(t, publish(t, device, topic+"/result", `{"status":"ok","result":{"setpoint":21.5}}`))
	waitCmd(t, edge, dev, local.ID, "succeeded")
	edge.Stop() // before the uplink returns: the answer was never sent
	require.Equal(t, "delivered", getCmd(t, up, dev, c.ID).Status)

	link.restore()
	edge = startHubWith(t, edgeDir, edgeCfg)
	done := waitCmd(t, up, dev, c.ID, "succeeded")
	require.Equal(t, 21.5, done.Result["setpoint"], "the device's own result")
	// The upstream shows the result once it has it; the edge counts it once
	// the upstream's PUBACK (sent when the result is stored) came back.
	testenv.Eventually(t, 10*time.Second, "the answer counted as recovered", func() bool {
		return metricOf(t, edge, "telehub_forward_command_results_recovered_total") == 1
	})

	// Answered and acknowledged: another restart sends nothing.
	edge.Stop()
	edge = startHubWith(t, edgeDir, edgeCfg)
	testenv.Eventually(t, 10*time.Second, "uplink connected", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 1
	})
	otherCmd := sendCmd(t, up, dev, `{"name":"set_mode","params":{"mode":"off"},"timeout":"60s"}`)
	waitCmd(t, up, dev, otherCmd.ID, "delivered") // the new connection works
	require.Zero(t, metricOf(t, edge, "telehub_forward_command_results_recovered_total"))
}
