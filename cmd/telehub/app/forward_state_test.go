package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	devcontrol "github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/internal/testenv"
)

// TestForwardPassesDesiredStateDown: desired state set on the upstream's
// API for a device connected only to the edge (a simulated thermostat)
// becomes the device's desired state at the edge, which publishes it to the
// device: the device applies it and reports it, so the edge shows it in
// sync, and the report goes up, so the upstream does too. A change made
// while the uplink is cut arrives when it returns (the upstream's retained
// message), and so does the device's report of it; a reconnection with
// nothing new changes nothing at the edge; a device the edge does not know
// is ignored.
func TestForwardPassesDesiredStateDown(t *testing.T) {
	up, edge, link := startEdgePair(t, nil)
	const dev = "fs-thermo-0001"
	createDevice(t, up, dev, "thermostat")
	createDevice(t, up, "fs-elsewhere", "thermostat") // registered upstream only
	startSimFleet(t, edge, "fs", 1, 0, nil)           // registers and connects the device at the edge only
	testenv.Eventually(t, 10*time.Second, "uplink connected", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 1
	})
	edgeState := func() devcontrol.State {
		st, ok := edge.control.states.Get(dev)
		require.True(t, ok)
		return st
	}
	putUpstream := func(body string) {
		t.Helper()
		status, _, b := ctlCall(t, up, up.AdminToken, "PUT", "/api/v1/devices/"+dev+"/state", body)
		require.Equal(t, 200, status, "%s", b)
	}
	applied := func(setpoint float64, mode string) func() bool {
		return func() bool {
			st := edgeState()
			return st.Desired["setpoint"] != nil && num(st.Desired["setpoint"]) == setpoint && st.Desired["mode"] == mode && st.InSync
		}
	}
	reportedUpstream := func(setpoint float64, mode string) func() bool {
		return func() bool {
			st, ok := up.control.states.Get(dev)
			require.True(t, ok)
			return num(st.Reported["setpoint"]) == setpoint && st.Reported["mode"] == mode && st.InSync
		}
	}

	putUpstream(`{"setpoint":23.5,"mode":"heat"}`)
	testenv.Eventually(t, 10*time.Second, "the upstream's desired state is the edge's, and the device there applied it", applied(23.5, "heat"))
	st := edgeState()
	require.Contains(t, st.DesiredBy, "upstream edge-1")
	require.Equal(t, 23.5, num(st.Reported["setpoint"]), "the device behind the edge reported it")
	require.Equal(t, 1.0, metricOf(t, edge, `telehub_forward_desired_total{outcome="applied"}`))
	testenv.Eventually(t, 10*time.Second, "the device's report reaches the upstream, in sync there too", reportedUpstream(23.5, "heat"))

	status, _, b := ctlCall(t, up, up.AdminToken, "PUT", "/api/v1/devices/fs-elsewhere/state", `{"setpoint":18}`)
	require.Equal(t, 200, status, "%s", b)
	testenv.Eventually(t, 10*time.Second, "a device the edge does not know is ignored", func() bool {
		return metricOf(t, edge, `telehub_forward_desired_total{outcome="ignored"}`) >= 1
	})
	_, known := edge.control.states.Get("fs-elsewhere")
	require.False(t, known)

	// Changed while the uplink is cut: it arrives when the uplink returns.
	link.cut()
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 0
	})
	putUpstream(`{"setpoint":19,"mode":"off"}`)
	require.Equal(t, 23.5, num(edgeState().Desired["setpoint"]), "no route while the uplink is down")
	link.restore()
	testenv.Eventually(t, 10*time.Second, "the change made during the outage reaches the edge and the device", applied(19, "off"))
	testenv.Eventually(t, 10*time.Second, "and the device's report of it the upstream", reportedUpstream(19, "off"))
	version := edgeState().DesiredVersion
	require.Equal(t, 2.0, metricOf(t, edge, `telehub_forward_desired_total{outcome="applied"}`))

	// Reconnecting with nothing new upstream changes nothing at the edge.
	unchanged := metricOf(t, edge, `telehub_forward_desired_total{outcome="unchanged"}`)
	link.cut()
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return metricOf(t, edge, "telehub_forward_connected") == 0
	})
	link.restore()
	testenv.Eventually(t, 10*time.Second, "the retained desired state comes again and is found unchanged", func() bool {
		return metricOf(t, edge, `telehub_forward_desired_total{outcome="unchanged"}`) > unchanged
	})
	require.Equal(t, version, edgeState().DesiredVersion, "not set again")
	require.Equal(t, 2.0, metricOf(t, edge, `telehub_forward_desired_total{outcome="applied"}`))
}

// num reads a JSON number decoded by the hub (json.Number) or by
// encoding/json (float64).
func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case interface{ Float64() (float64, error) }:
		f, _ := x.Float64()
		return f
	}
	return -1
}
