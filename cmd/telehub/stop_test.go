package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestServeExitsNonZeroWhenTheFinalFlushFails runs `telehub serve` with its
// data directory on a small tmpfs, lets acknowledged readings reach the
// embedded store's in-memory head, fills the disk and stops the hub with
// SIGTERM: the store's final flush into history.db fails, which the hub
// logs and reports with exit status 1 (a supervisor sees it).
func TestServeExitsNonZeroWhenTheFinalFlushFails(t *testing.T) {
	hub := newHubProcess(t, buildTelehub(t), testenv.Influx{})
	testenv.SmallFS(t, hub.dataDir, "size=64m")
	hub.start(t)
	// Readings of many fields, so that flushing them needs new pages of
	// history.db rather than free ones it already has.
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + hub.mqtt).SetClientID("wide-1").
		SetUsername("wide-1").SetPassword(hub.createDevice(t, "wide-1")).SetCleanSession(true))
	tok := dev.Connect()
	require.True(t, tok.WaitTimeout(crashTimeout) && tok.Error() == nil, "connect: %v", tok.Error())
	defer dev.Disconnect(0)
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 20 {
		var b strings.Builder
		fmt.Fprintf(&b, `{"ts":%d`, base+int64(i))
		for f := range 50 {
			fmt.Fprintf(&b, `,"f%d":%d.5`, f, i*f)
		}
		b.WriteString("}")
		tok := dev.Publish("devices/wide-1/telemetry", 1, false, b.String())
		require.True(t, tok.WaitTimeout(crashTimeout) && tok.Error() == nil, "publish %d: %v", i, tok.Error())
	}
	testenv.Eventually(t, crashTimeout, "the acknowledged readings in the store's head", func() bool {
		return hub.metric(t, "telehub_store_readings_written_total") == 20
	})
	require.Positive(t, hub.metric(t, "telehub_store_head_bytes"), "not flushed yet")
	testenv.FillFS(t, hub.dataDir)
	err := hub.stop()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "telehub serve exits with an error status, got %v", err)
	require.Equal(t, 1, exit.ExitCode())
	out, rerr := os.ReadFile(hub.logPath(hub.runs))
	require.NoError(t, rerr)
	require.Contains(t, string(out), "embedded store final flush")
	require.Contains(t, string(out), "no space left on device")
}
