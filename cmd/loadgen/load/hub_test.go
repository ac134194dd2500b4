package load_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/cmd/telehub/app"
	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// The generator against a real hub: devices provisioned through the bulk
// API (twice: the second time their tokens are rotated), a fleet publishing
// at QoS 1 with every publish acknowledged, and dashboards on the live
// stream receiving every reading with its latency.
func TestFleetAgainstTelehub(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTT.MessageRate = 0
	require.NoError(t, cfg.Validate())
	hub, err := app.Start(context.Background(), cfg, testenv.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, hub.Stop()) })
	ctx := context.Background()
	api := "http://" + hub.HTTPAddr()

	ids := load.DeviceIDs("gen", 30)
	first, err := load.Provision(ctx, api, hub.AdminToken, ids, "thermostat")
	require.NoError(t, err)
	require.Len(t, first, 30)
	devs, err := load.Provision(ctx, api, hub.AdminToken, ids, "thermostat")
	require.NoError(t, err, "existing devices get new tokens")
	require.NotEqual(t, first[0].Token, devs[0].Token)

	_, _, err = load.Connect(ctx, load.FleetConfig{Addr: hub.MQTTAddr(), Devices: first[:1]})
	var ce *load.ConnectError
	require.ErrorAs(t, err, &ce, "the rotated token no longer works")

	dash, err := load.Dashboards(ctx, "ws://"+hub.HTTPAddr()+"/api/v1/live?kinds=reading", hub.AdminToken, 2)
	require.NoError(t, err)
	defer dash.Close()

	f, res, err := load.Connect(ctx, load.FleetConfig{Addr: hub.MQTTAddr(), Devices: devs, SourceIPs: 4, KeepAlive: time.Minute})
	require.NoError(t, err)
	require.Equal(t, 30, res.Connected)
	defer f.Close()
	out, err := f.Publish(ctx, load.PublishConfig{Rate: 300, Duration: time.Second, QoS: 1})
	require.NoError(t, err)
	require.Equal(t, int64(300), out.Sent)
	require.Equal(t, int64(300), out.Acked, "every QoS 1 reading is acknowledged")
	require.Zero(t, out.Unacked)
	testenv.Eventually(t, 10*time.Second, "both dashboards receive every reading", func() bool {
		return dash.Result().Readings == 600
	})
	r := dash.Result()
	require.Equal(t, int64(600), r.Latency.Count)
	require.Positive(t, r.Latency.Max)
	require.Zero(t, f.Dropped())
}
