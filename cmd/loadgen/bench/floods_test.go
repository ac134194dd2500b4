package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
)

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("# HELP telehub_x A counter.\n# TYPE telehub_x counter\ntelehub_x 3\n" +
		"telehub_mqtt_limit_hits_total{limit=\"topic_bytes\"} 1000\n\ntelehub_g 1.5e+06\n"))
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"telehub_x": 3, `telehub_mqtt_limit_hits_total{limit="topic_bytes"}`: 1000, "telehub_g": 1.5e6}, m)

	for _, bad := range []string{"telehub_x\n", "telehub_x three\n", "# only comments\n"} {
		_, err := parseMetrics(strings.NewReader(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestRefusalsAreTheGrowthOfRefusalCounters(t *testing.T) {
	before := map[string]float64{`telehub_ingest_rejected_total{reason="fields"}`: 2, `telehub_mqtt_limit_hits_total{limit="topic_bytes"}`: 5,
		"telehub_ingest_readings_total": 10}
	after := map[string]float64{`telehub_ingest_rejected_total{reason="fields"}`: 32, `telehub_mqtt_limit_hits_total{limit="topic_bytes"}`: 5,
		`telehub_mqtt_limit_hits_total{limit="retained_bytes_per_client"}`: 145, "telehub_ingest_readings_total": 20}
	got := refusals(before, after)
	require.Equal(t, map[string]float64{`telehub_ingest_rejected_total{reason="fields"}`: 30,
		`telehub_mqtt_limit_hits_total{limit="retained_bytes_per_client"}`: 145}, got)
	require.Equal(t, "`ingest_rejected_total{reason=\"fields\"}` 30, `mqtt_limit_hits_total{limit=\"retained_bytes_per_client\"}` 145", refusedText(got))
	require.Equal(t, "5 x 0x00, 145 x 0x97 (quota exceeded)", acksText(map[byte]int{0x97: 145, 0: 5}))
}

// The flood is the security review's: every name new, each batch within
// the default max_packet_bytes so that it is read and refused for its
// fields, not for its size.
func TestFieldFloodBatches(t *testing.T) {
	batches := fieldFloodBatches(30, 70, 250, time.Now())
	require.Len(t, batches, 30)
	names := map[string]bool{}
	for _, b := range batches {
		require.Less(t, len(b), int(config.Default().MQTT.MaxPacketBytes)-100)
		var points []map[string]any
		require.NoError(t, json.Unmarshal(b, &points))
		require.Len(t, points, 70)
		for _, p := range points {
			require.Len(t, p, 251)
			for k := range p {
				if k != "ts" {
					require.False(t, names[k], "name %s repeated", k)
					names[k] = true
				}
			}
		}
	}
	require.Len(t, names, 525_000)
}

// The bounds are the documented ones (README, docs/architecture.md) at the
// default caps.
func TestFloodBounds(t *testing.T) {
	b := floodBounds(config.Default())
	require.Equal(t, map[string]int64{"field": (64<<10 + 512<<10 + 1024*400) / 1024, "alias": 64 + 512 + 16,
		"retained": (64<<10 + 512<<10 + 1<<20 + 100*300) / 1024}, b)
	c := config.Default()
	c.MQTT.Limits.TopicAliasMaximum = 0
	require.Equal(t, int64(64+512), floodBounds(c)["alias"])
}

func TestFloodsMarkdown(t *testing.T) {
	rep := Report{FloodIdleKB: 14 * 1024, Floods: []FloodRow{
		{Flood: "field", Sent: "30 batches", Acks: map[byte]int{0x97: 30}, Refused: map[string]float64{`telehub_ingest_rejected_total{reason="fields"}`: 30},
			BeforeKB: 14 * 1024, AfterKB: 26 * 1024, CollectedKB: 14*1024 + 512, HeapBefore: 7 << 20, HeapAfter: 7<<20 + 20<<10, BoundKB: 976, Extra: "answer 0.3 KB"},
		{Flood: "alias", BeforeKB: 15 * 1024, AfterKB: 19 * 1024, CollectedKB: 16 * 1024, HeapBefore: 7 << 20, HeapAfter: 8 << 20, BoundKB: 592},
		{Flood: "retained", BeforeKB: 19 * 1024, Err: "puback 1 of 150: EOF"},
	}}
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	rep.floodsMarkdown(w)
	rep.floodsTargets(w)
	out := b.String()
	require.Contains(t, out, "idle RSS 14.0 MB")
	require.Contains(t, out, "| field | 30 batches | 30 x 0x97 (quota exceeded) | `ingest_rejected_total{reason=\"fields\"}` 30 | 14.0 MB | 26.0 MB | 14.5 MB | +0.02 MB | 1.0 MB | **met** | answer 0.3 KB |")
	require.Contains(t, out, "| alias |  |  |  | 15.0 MB | 19.0 MB | 16.0 MB | +1.00 MB | 0.6 MB | **not met** |  |", "1 MiB over a bound of 592 KiB")
	require.Contains(t, out, "| retained |  |  |  | 19.0 MB |  |  |  | 0.0 MB |  | puback 1 of 150: EOF |")
	require.Contains(t, out, "| field +0.02 MB, alias +1.00 MB, retained +0.00 MB | **not met** |\n")
}

func TestMemStat(t *testing.T) {
	profile := "heap profile: 1: 2 [3: 4] @ heap/1048576\n1: 2 [3: 4] @ 0x1 0x2\n\n# runtime.MemStats\n# Alloc = 7006800\n# HeapAlloc = 7006801\n# HeapSys = 28639232\n"
	v, err := memStat(strings.NewReader(profile), "HeapAlloc")
	require.NoError(t, err)
	require.Equal(t, int64(7006801), v)
	_, err = memStat(strings.NewReader(profile), "HeapInuse")
	require.ErrorContains(t, err, "no HeapInuse")
}

// The MQTT 5 client against a real mochi: a retained QoS 1 publish is
// acknowledged and kept, a topic alias binds and is then usable alone.
func TestMQTT5Client(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	require.NoError(t, srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })

	got := make(chan string, 4)
	require.NoError(t, srv.Subscribe("a/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		got <- pk.TopicName + " " + string(pk.Payload)
	}))
	c, ack, err := dialMQTT5(context.Background(), addr, "c1", "u", "p")
	require.NoError(t, err)
	t.Cleanup(func() { c.close() })
	require.Equal(t, byte(0), ack.ReasonCode)

	require.NoError(t, c.publish("a/r", 0, 1, true, 1, []byte("kept")))
	require.NoError(t, c.publish("a/alias", 3, 1, false, 2, []byte("one")))
	require.NoError(t, c.publish("", 3, 1, false, 3, []byte("two")))
	codes, err := c.pubacks(3, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, map[byte]int{0: 3}, codes)
	require.Equal(t, []string{"a/r kept", "a/alias one", "a/alias two"}, []string{<-got, <-got, <-got})
	require.Len(t, srv.Topics.Messages("a/r"), 1, "retained")
}
