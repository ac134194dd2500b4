package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

func apiCall(t *testing.T, a *App, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestDeviceAPIBulkFilterPatchDelete(t *testing.T) {
	a := startHub(t, nil)
	var bulk struct {
		Results []struct {
			ID     string `json:"id"`
			Status int    `json:"status"`
			Token  string `json:"token"`
			Error  string `json:"error"`
		} `json:"results"`
	}
	body := `{"devices":[
		{"id":"k1","type":"thermostat","name":"Kitchen","labels":{"room":"kitchen","floor":"1"}},
		{"id":"k2","type":"thermostat","labels":{"room":"hall","floor":"1"}},
		{"id":"w1","type":"wearable","labels":{"owner":"ann"}},
		{"id":"bad/id","type":"thermostat"},
		{"id":"k1","type":"thermostat"}]}`
	require.Equal(t, http.StatusOK, apiCall(t, a, "POST", "/api/v1/devices/bulk", body, &bulk))
	statuses := []int{}
	for _, r := range bulk.Results {
		statuses = append(statuses, r.Status)
	}
	require.Equal(t, []int{201, 201, 201, 400, 409}, statuses)
	require.NotEmpty(t, bulk.Results[0].Token)

	_, err := connect(t, a, "k2", bulk.Results[1].Token)
	require.NoError(t, err)

	type list struct {
		Devices []struct {
			ID string `json:"id"`
		} `json:"devices"`
		Next string `json:"next"`
	}
	ids := func(path string) ([]string, string) {
		var l list
		require.Equal(t, http.StatusOK, apiCall(t, a, "GET", path, "", &l))
		var out []string
		for _, d := range l.Devices {
			out = append(out, d.ID)
		}
		return out, l.Next
	}
	// mochi reports the session just after its CONNACK.
	testenv.Eventually(t, 5*time.Second, "k2 online", func() bool {
		got, _ := ids("/api/v1/devices?online=true")
		return len(got) == 1
	})
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"k1", "k2", "w1"}},
		{"?type=thermostat", []string{"k1", "k2"}},
		{"?labels=floor=1,room!=hall", []string{"k1"}},
		{"?labels=owner", []string{"w1"}},
		{"?online=true", []string{"k2"}},
		{"?online=false&type=thermostat", []string{"k1"}},
		{"?q=kitch", []string{"k1"}},
	} {
		got, _ := ids("/api/v1/devices" + tc.query)
		require.Equal(t, tc.want, got, tc.query)
	}
	page, next := ids("/api/v1/devices?limit=2")
	require.Equal(t, []string{"k1", "k2"}, page)
	page, next = ids("/api/v1/devices?limit=2&after=" + next)
	require.Equal(t, []string{"w1"}, page)
	require.Empty(t, next)
	require.Equal(t, http.StatusBadRequest, apiCall(t, a, "GET", "/api/v1/devices?online=maybe", "", nil))

	var d struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
		Type   string            `json:"type"`
	}
	require.Equal(t, http.StatusOK, apiCall(t, a, "PATCH", "/api/v1/devices/w1", `{"name":"Ann's watch","labels":{"owner":"bob"}}`, &d))
	require.Equal(t, "Ann's watch", d.Name)
	require.Equal(t, map[string]string{"owner": "bob"}, d.Labels)
	require.Equal(t, http.StatusBadRequest, apiCall(t, a, "PATCH", "/api/v1/devices/w1", `{"type":"thermostat"}`, nil), "type cannot change")
	require.Equal(t, http.StatusNotFound, apiCall(t, a, "PATCH", "/api/v1/devices/ghost", `{"name":"x"}`, nil))
}

// Deleting a device or rotating its token ends its live session at once,
// and the old credentials no longer connect.
func TestDeleteAndRotateDisconnect(t *testing.T) {
	a := startHub(t, nil)
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"rotate", "POST", "/api/v1/devices/rev-rotate/token", http.StatusOK},
		{"delete", "DELETE", "/api/v1/devices/rev-delete", http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "rev-" + tc.name
			tok := createDevice(t, a, id, "thermostat")
			lost := make(chan struct{})
			opts := paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID(id).
				SetUsername(id).SetPassword(tok).SetAutoReconnect(false).
				SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
			c := paho.NewClient(opts)
			ct := c.Connect()
			require.True(t, ct.WaitTimeout(5*time.Second))
			require.NoError(t, ct.Error())
			require.Equal(t, tc.status, apiCall(t, a, tc.method, tc.path, "", nil))
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("the session survived")
			}
			_, err := connect(t, a, id, tok)
			require.Error(t, err, "old credentials must be refused")
		})
	}
}
