package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/internal/testenv"
)

// The bare-broker peer admits anonymous devices and its subscriber counts
// their telemetry, and nothing else.
func TestPeerCountsTelemetry(t *testing.T) {
	p, err := StartPeer("127.0.0.1:0", "127.0.0.1:0", testenv.Logger(t))
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	mqttAddr := p.Addr()
	ctx := context.Background()
	f, _, err := load.Connect(ctx, load.FleetConfig{Addr: mqttAddr, Devices: []load.Device{{ID: "a"}, {ID: "b"}}})
	require.NoError(t, err)
	defer f.Close()
	res, err := f.Publish(ctx, load.PublishConfig{Rate: 200, Duration: 250 * time.Millisecond, QoS: 1})
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Acked)
	testenv.Eventually(t, 5*time.Second, "the subscriber counts every reading", func() bool { return p.Received() == 50 })

	c, err := load.Dialer{Addr: mqttAddr}.Dial(ctx, "other", "", "")
	require.NoError(t, err)
	defer c.Disconnect()
	for _, topic := range []string{"elsewhere/x", "devices/c/state", "devices/c/telemetry"} {
		_, err = c.Publish(topic, 0, []byte("{}"), nil)
		require.NoError(t, err)
	}
	// One connection's publishes are handled in order: once the last is
	// counted, the others were seen and not counted.
	testenv.Eventually(t, 5*time.Second, "the last telemetry is counted", func() bool { return p.Received() == 51 })
}
