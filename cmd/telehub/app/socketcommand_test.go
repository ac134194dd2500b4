package app

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// Operators may send commands over the live WebSocket; viewers may not.
func TestCommandOverTheLiveSocket(t *testing.T) {
	a := startHub(t, nil)
	createDevice(t, a, "ws-cmd-1", "thermostat")
	var viewer struct {
		Secret string `json:"secret"`
	}
	require.Equal(t, http.StatusCreated, apiCall(t, a, "POST", "/api/v1/tokens", `{"name":"wall","role":"viewer"}`, &viewer))

	send := func(token string) map[string]any {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+a.HTTPAddr()+"/api/v1/live?kinds=alert&token="+token, nil)
		require.NoError(t, err)
		resp.Body.Close()
		defer c.Close()
		require.NoError(t, c.WriteMessage(websocket.TextMessage,
			[]byte(`{"type":"command","ref":"r1","device_id":"ws-cmd-1","name":"set_mode","params":{"mode":"off"}}`)))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		return m
	}
	m := send(viewer.Secret)
	require.Equal(t, "error", m["kind"])
	require.Equal(t, "r1", m["ref"])
	require.Equal(t, 403.0, m["status"])

	m = send(a.AdminToken)
	require.Equal(t, "command_ack", m["kind"], m)
	require.Equal(t, "r1", m["ref"])
	cmd := m["command"].(map[string]any)
	require.Equal(t, "set_mode", cmd["name"])
	require.Equal(t, "queued", cmd["status"], "the device is offline")

	var got map[string]any
	require.Equal(t, http.StatusOK, apiCall(t, a, "GET", "/api/v1/devices/ws-cmd-1/commands/"+cmd["id"].(string), "", &got))
	require.Equal(t, "queued", got["status"])
}
