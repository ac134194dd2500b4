package web

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
)

type msg struct {
	Seq       uint64         `json:"seq"`
	Kind      string         `json:"kind"`
	DeviceID  string         `json:"device_id"`
	Fields    map[string]any `json:"fields"`
	Conflated int            `json:"conflated"`
	Missed    uint64         `json:"missed"`
	Error     string         `json:"error"`
}

func readMsg(t *testing.T, c interface {
	SetReadDeadline(time.Time) error
	ReadMessage() (int, []byte, error)
}) msg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	require.NoError(t, err)
	var m msg
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	return m
}

func reading(id, typ string, ts time.Time, fields ...ingest.Field) live.Message {
	r := ingest.Reading{DeviceID: id, DeviceType: typ, Time: ts, Fields: fields}
	return live.Message{Kind: live.KindReading, DeviceID: id, Body: ingest.ReadingBody(nil, r), Data: r}
}

func event(t *testing.T, kind, id string, v any) live.Message {
	m, err := live.Event(kind, id, time.Now(), v)
	require.NoError(t, err)
	return m
}

func num(name string, v float64) ingest.Field {
	return ingest.Field{Name: name, Value: ingest.Number(v)}
}

func mkDevices(t *testing.T, reg *devices.Registry) {
	for _, d := range []devices.Device{
		{ID: "t1", Type: "thermostat", Labels: map[string]string{"room": "kitchen"}},
		{ID: "t2", Type: "thermostat", Labels: map[string]string{"room": "hall"}},
		{ID: "w1", Type: "wearable"},
	} {
		_, _, err := reg.Create(d)
		require.NoError(t, err)
	}
}

func TestFiltersInQueryAndSubscribe(t *testing.T) {
	hub := live.New(1024)
	srv, reg := newServerWith(t, hub, StreamConfig{})
	mkDevices(t, reg)
	now := time.Now()
	publishAll := func() {
		hub.Publish(
			reading("t1", "thermostat", now, num("humidity", 40), num("temperature", 21)),
			reading("t2", "thermostat", now, num("temperature", 19)),
			reading("w1", "wearable", now, num("heart_rate", 70)),
			event(t, live.KindAlert, "t2", map[string]string{"state": "firing"}),
		)
	}
	for _, tc := range []struct {
		name, query string
		want        []string // kind:device
	}{
		{"everything", "", []string{"reading:t1", "reading:t2", "reading:w1", "alert:t2"}},
		{"devices", "&devices=t2,w1", []string{"reading:t2", "reading:w1", "alert:t2"}},
		{"types", "&types=wearable", []string{"reading:w1"}},
		{"labels", "&labels=room=kitchen", []string{"reading:t1"}},
		{"kinds", "&kinds=alert", []string{"alert:t2"}},
		{"fields", "&fields=temperature", []string{"reading:t1", "reading:t2", "alert:t2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv, tc.query)
			publishAll()
			var got []string
			for range tc.want {
				m := readMsg(t, c)
				got = append(got, m.Kind+":"+m.DeviceID)
				if tc.name == "fields" && m.DeviceID == "t1" {
					require.Equal(t, map[string]any{"temperature": 21.0}, m.Fields, "only the fields asked for")
				}
			}
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("subscribe on an open socket", func(t *testing.T) {
		c := dial(t, srv, "&kinds=alert")
		require.NoError(t, c.WriteMessage(1, []byte(`{"type":"subscribe","filter":{"devices":["w1"]}}`)))
		require.Equal(t, "subscribed", readMsg(t, c).Kind)
		publishAll()
		m := readMsg(t, c)
		require.Equal(t, "w1", m.DeviceID)
		require.NoError(t, c.WriteMessage(1, []byte(`{"type":"subscribe","filter":{"kinds":["nonsense"]}}`)))
		m = readMsg(t, c)
		require.Equal(t, "error", m.Kind)
		require.Contains(t, m.Error, "nonsense")
		require.NoError(t, c.WriteMessage(1, []byte(`not json`)))
		require.Equal(t, "error", readMsg(t, c).Kind)
	})

	_, resp, err := wsDial(srv, "/api/v1/live?token="+adminToken+"&kinds=bogus")
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// A client far behind gets readings conflated to the latest value per
// device and field, and every alert and command, in seq order.
func TestLaggingClientGetsConflatedReadingsAndEveryEvent(t *testing.T) {
	hub := live.New(1 << 15)
	srv, _ := newServerWith(t, hub, StreamConfig{ConflateAbove: 100})
	now := time.Now()
	for i := range 5000 {
		hub.Publish(reading("t1", "thermostat", now.Add(time.Duration(i)*time.Millisecond), num("temperature", float64(i))))
		if i%1000 == 500 {
			hub.Publish(event(t, live.KindAlert, "t1", map[string]int{"n": i}))
			hub.Publish(reading("t2", "thermostat", now, num("humidity", float64(i))))
		}
	}
	c := dial(t, srv, "&since=0")
	var alerts, readings int
	var last uint64
	var t1 msg
	for alerts < 5 || t1.Fields == nil {
		m := readMsg(t, c)
		require.Greater(t, m.Seq, last, "seq increases")
		last = m.Seq
		switch m.Kind {
		case "alert":
			alerts++
		case "reading":
			readings++
			if m.DeviceID == "t1" {
				t1 = m
			}
		}
	}
	require.Equal(t, 5, alerts, "no alert is conflated away")
	require.Equal(t, 4999.0, t1.Fields["temperature"], "the latest value")
	require.Equal(t, 5000, t1.Conflated)
	require.LessOrEqual(t, readings, 2, "one reading per device")
}

func TestSSEAndPollDeliverTheSameMessages(t *testing.T) {
	hub := live.New(1024)
	srv, _ := newServerWith(t, hub, StreamConfig{PollWait: 50 * time.Millisecond, WriteEvery: time.Millisecond})
	now := time.Now()
	for i := range 10 {
		hub.Publish(reading("t1", "thermostat", now, num("n", float64(i))))
	}

	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Last-Event-ID", "4")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	br := bufio.NewReader(resp.Body)
	var sse []string
	for len(sse) < 6 {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			sse = append(sse, strings.TrimSpace(d))
		} else if id, ok := strings.CutPrefix(line, "id: "); ok {
			require.Equal(t, fmt.Sprint(len(sse)+5), strings.TrimSpace(id))
		}
	}

	get := func(q string) (int, struct {
		Messages []json.RawMessage `json:"messages"`
		Next     uint64            `json:"next"`
	}) {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/events/poll"+q, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out struct {
			Messages []json.RawMessage `json:"messages"`
			Next     uint64            `json:"next"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	status, p := get("?since=4")
	require.Equal(t, 200, status)
	require.Len(t, p.Messages, 6)
	for i, m := range p.Messages {
		require.JSONEq(t, sse[i], string(m), "SSE and polling carry the same message")
	}
	require.Equal(t, uint64(10), p.Next)
	_, p = get(fmt.Sprintf("?since=%d", p.Next))
	require.Empty(t, p.Messages, "nothing new: the poll times out empty")
	require.Equal(t, uint64(10), p.Next)
	status, _ = get("")
	require.Equal(t, 400, status)

	// The WebSocket carries the same message too.
	c := dial(t, srv, "&since=4")
	_, b, err := c.ReadMessage()
	require.NoError(t, err)
	require.JSONEq(t, sse[0], string(b))
}

func TestTicketOpensTheStreamOnce(t *testing.T) {
	srv := newServer(t, live.New(16))
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/live/ticket", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var tk struct {
		Ticket string `json:"ticket"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tk))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	c, resp, err := wsDial(srv, "/api/v1/live?ticket="+tk.Ticket)
	require.NoError(t, err)
	resp.Body.Close()
	c.Close()
	_, resp, err = wsDial(srv, "/api/v1/live?ticket="+tk.Ticket)
	require.Error(t, err, "a ticket works once")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(body), "ticket")
}

// A client resuming with a seq from an earlier run of the hub (seq starts
// at the time in microseconds, so runs do not overlap) is told to reset.
func TestResumeAcrossAHubRestart(t *testing.T) {
	hub := live.NewAt(64, 5000)
	srv := newServer(t, hub)
	publishN(hub, 0, 3, "")
	for _, since := range []string{"100", "9000"} {
		c := dial(t, srv, "&since="+since)
		m := readMsg(t, c)
		require.Equal(t, "gap", m.Kind, since)
		publishN(hub, 3, 1, "")
		require.Greater(t, readMsg(t, c).Seq, uint64(5002), "then live messages")
	}
	c := dial(t, srv, "&since=0")
	require.Equal(t, uint64(5000), readMsg(t, c).Seq, "since=0 replays this run")
}
