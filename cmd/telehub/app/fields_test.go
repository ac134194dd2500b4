package app

import (
	"net/http"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
)

// TestFieldCapPerDevice: a device may have at most
// ingest.max_fields_per_device distinct field names. Past it a payload
// with a new name is refused whole (MQTT 5: PUBACK 0x97; MQTT 3:
// acknowledged and dropped, as a resend would be refused again) and
// counted; readings of known names keep working; the API shows only
// admitted names; the cap holds across a restart; deleting the device
// drops its names.
func TestFieldCapPerDevice(t *testing.T) {
	dir := t.TempDir()
	capped := func(c *config.Config) { c.Ingest.MaxFieldsPerDevice = 4 }
	a := startHubWith(t, dir, capped)
	token := createDevice(t, a, "wide", "thermostat")
	v5 := dialMQTT5As(t, a, "wide", token)
	const topic = "devices/wide/telemetry"

	require.Equal(t, packets.CodeSuccess.Code, v5.publish(t, topic, `{"a":1,"b":2,"c":3}`))
	require.Equal(t, packets.CodeSuccess.Code, v5.publish(t, topic, `{"a":1,"d":4}`), "the fourth name is within the cap")
	require.Equal(t, packets.ErrQuotaExceeded.Code, v5.publish(t, topic, `{"a":10,"e":5}`), "a known and a new name: refused whole")
	require.Equal(t, packets.CodeSuccess.Code, v5.publish(t, topic, `{"b":20}`), "known names keep working")

	v3, err := connect(t, a, "wide", token)
	require.NoError(t, err)
	require.NoError(t, publish(t, v3, topic, `{"f":6}`), "MQTT 3: acknowledged, not stored")

	m := proofMetrics(t, a)
	require.Equal(t, 2.0, m[`telehub_ingest_rejected_total{reason="fields"}`])
	var dev struct {
		Latest map[string]any `json:"latest"`
	}
	apiGet(t, a, "/api/v1/devices/wide", &dev)
	require.Equal(t, map[string]any{"a": 1.0, "b": 20.0, "c": 3.0, "d": 4.0}, dev.Latest)

	v3.Disconnect(100)
	a.Stop()
	a = startHubWith(t, dir, capped)
	v5 = dialMQTT5As(t, a, "wide", token)
	require.Equal(t, packets.ErrQuotaExceeded.Code, v5.publish(t, topic, `{"g":7}`), "the cap holds after a restart")
	require.Equal(t, packets.CodeSuccess.Code, v5.publish(t, topic, `{"c":30}`))

	require.Equal(t, http.StatusNoContent, api(t, a, a.AdminToken, "DELETE", "/api/v1/devices/wide", "", nil))
	token = createDevice(t, a, "wide", "thermostat")
	v5 = dialMQTT5As(t, a, "wide", token)
	require.Equal(t, packets.CodeSuccess.Code, v5.publish(t, topic, `{"h":1,"i":2,"j":3,"k":4}`), "a deleted device's names are dropped")
}
