package app

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/ingest/influx"
	"github.com/telehub/telehub/ingest/store"
	"github.com/telehub/telehub/internal/testenv"
)

type historyBackend interface {
	ingest.Sink
	ingest.History
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// historyData: device h1 reads every 10 s for 10 minutes, temperature = i,
// heating alternating, mode a string; device h2 has other values.
func historyData() []ingest.Reading {
	var rs []ingest.Reading
	for i := range 60 {
		mode := "heat"
		if i%3 == 0 {
			mode = "off"
		}
		rs = append(rs, ingest.Reading{DeviceID: "h1", DeviceType: "thermostat", Time: t0.Add(time.Duration(i) * 10 * time.Second),
			Fields: []ingest.Field{{Name: "heating", Value: ingest.Bool(i%2 == 0)}, {Name: "mode", Value: ingest.String(mode)},
				{Name: "temperature", Value: ingest.Number(float64(i))}}})
		rs = append(rs, ingest.Reading{DeviceID: "h2", DeviceType: "thermostat", Time: t0.Add(time.Duration(i) * 10 * time.Second),
			Fields: []ingest.Field{{Name: "temperature", Value: ingest.Number(100 + float64(i))}}})
	}
	return rs
}

func ms(d time.Duration) int64 { return t0.Add(d).UnixMilli() }

func at(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }

// historyCases is the one table both backends must answer alike.
var historyCases = []struct {
	name  string
	query url.Values
	want  []ingest.Series
}{
	{"raw one field", url.Values{"fields": {"temperature"}, "from": {at(0)}, "to": {at(time.Minute)}},
		[]ingest.Series{{Field: "temperature", Times: []int64{ms(0), ms(10 * time.Second), ms(20 * time.Second), ms(30 * time.Second), ms(40 * time.Second), ms(50 * time.Second)},
			Values: []any{0.0, 1.0, 2.0, 3.0, 4.0, 5.0}}}},
	{"raw every field keeps types", url.Values{"from": {at(0)}, "to": {at(20 * time.Second)}},
		[]ingest.Series{
			{Field: "heating", Times: []int64{ms(0), ms(10 * time.Second)}, Values: []any{true, false}},
			{Field: "mode", Times: []int64{ms(0), ms(10 * time.Second)}, Values: []any{"off", "heat"}},
			{Field: "temperature", Times: []int64{ms(0), ms(10 * time.Second)}, Values: []any{0.0, 1.0}}}},
	{"mean per minute", url.Values{"fields": {"temperature"}, "from": {at(0)}, "to": {at(3 * time.Minute)}, "every": {"1m"}},
		[]ingest.Series{{Field: "temperature", Times: []int64{ms(0), ms(time.Minute), ms(2 * time.Minute)}, Values: []any{2.5, 8.5, 14.5}}}},
	{"min per minute", url.Values{"fields": {"temperature"}, "from": {at(0)}, "to": {at(2 * time.Minute)}, "every": {"1m"}, "agg": {"min"}},
		[]ingest.Series{{Field: "temperature", Times: []int64{ms(0), ms(time.Minute)}, Values: []any{0.0, 6.0}}}},
	{"max per minute", url.Values{"fields": {"temperature"}, "from": {at(0)}, "to": {at(2 * time.Minute)}, "every": {"1m"}, "agg": {"max"}},
		[]ingest.Series{{Field: "temperature", Times: []int64{ms(0), ms(time.Minute)}, Values: []any{5.0, 11.0}}}},
	{"last of a boolean", url.Values{"fields": {"heating"}, "from": {at(0)}, "to": {at(2 * time.Minute)}, "every": {"1m"}, "agg": {"last"}},
		[]ingest.Series{{Field: "heating", Times: []int64{ms(0), ms(time.Minute)}, Values: []any{false, false}}}},
	{"unaligned start clips the first window", url.Values{"fields": {"temperature"}, "from": {at(30 * time.Second)}, "to": {at(2 * time.Minute)}, "every": {"1m"}},
		[]ingest.Series{{Field: "temperature", Times: []int64{ms(30 * time.Second), ms(time.Minute)}, Values: []any{4.0, 8.5}}}},
	{"mean of a string field is empty", url.Values{"fields": {"mode"}, "from": {at(0)}, "to": {at(time.Minute)}, "every": {"1m"}},
		[]ingest.Series{{Field: "mode", Times: []int64{}, Values: []any{}}}},
	{"unknown field is empty", url.Values{"fields": {"nope"}, "from": {at(0)}, "to": {at(time.Minute)}},
		[]ingest.Series{{Field: "nope", Times: []int64{}, Values: []any{}}}},
	{"range without data", url.Values{"fields": {"temperature"}, "from": {at(time.Hour)}, "to": {at(2 * time.Hour)}},
		[]ingest.Series{{Field: "temperature", Times: []int64{}, Values: []any{}}}},
}

func runHistoryCases(t *testing.T, b historyBackend) {
	require.NoError(t, b.Write(context.Background(), historyData()))
	for _, tc := range historyCases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ingest.ParseHistoryQuery("h1", tc.query, time.Now())
			require.NoError(t, err)
			got, err := b.History(context.Background(), q)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("every field of a wide device is bounded", func(t *testing.T) {
		r := ingest.Reading{DeviceID: "wide", DeviceType: "thermostat", Time: t0}
		for i := range ingest.MaxFields + 6 {
			r.Fields = append(r.Fields, ingest.Field{Name: fmt.Sprintf("f%03d", i), Value: ingest.Number(float64(i))})
		}
		require.NoError(t, b.Write(context.Background(), []ingest.Reading{r}))
		q, err := ingest.ParseHistoryQuery("wide", url.Values{"from": {at(-time.Minute)}, "to": {at(time.Minute)}}, time.Now())
		require.NoError(t, err)
		got, err := b.History(context.Background(), q)
		require.NoError(t, err)
		require.Len(t, got, ingest.MaxFields, "the first fields by name")
		require.Equal(t, "f000", got[0].Field)
		require.Equal(t, fmt.Sprintf("f%03d", ingest.MaxFields-1), got[ingest.MaxFields-1].Field)
		require.Equal(t, []any{float64(ingest.MaxFields - 1)}, got[ingest.MaxFields-1].Values)
	})
}

func TestHistoryEmbeddedStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "history.db"), store.Options{})
	require.NoError(t, err)
	defer db.Close()
	runHistoryCases(t, db)
}

func TestHistoryInflux(t *testing.T) {
	idb := testenv.NewInflux(t)
	cfg := influx.Config{URL: idb.URL, Bucket: idb.Database, Org: "telehub", Measurement: "telemetry", Timeout: 10 * time.Second}
	b := influx.New(cfg)
	defer b.Close()
	runHistoryCases(t, b)
}

func TestHistoryAPI(t *testing.T) {
	a := startHub(t, nil)
	tok := createDevice(t, a, "hist-1", "thermostat")
	c, err := connect(t, a, "hist-1", tok)
	require.NoError(t, err)
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	for i := range 3 {
		p := fmt.Sprintf(`{"ts":%d,"temperature":%d}`, base.Add(time.Duration(i)*time.Second).UnixMilli(), 20+i)
		require.NoError(t, publish(t, c, "devices/hist-1/telemetry", p))
	}
	var resp struct {
		Series []ingest.Series `json:"series"`
		Every  string          `json:"every"`
	}
	testenv.Eventually(t, 10*time.Second, "history has 3 points", func() bool {
		apiGet(t, a, "/api/v1/devices/hist-1/telemetry?fields=temperature&from=-1h", &resp)
		return len(resp.Series) == 1 && len(resp.Series[0].Times) == 3
	})
	require.Equal(t, []any{20.0, 21.0, 22.0}, resp.Series[0].Values)
	apiGet(t, a, "/api/v1/devices/hist-1/telemetry?fields=temperature&from=-1h&every=1m&agg=max", &resp)
	require.Equal(t, "1m0s", resp.Every)
	require.Equal(t, []any{22.0}, resp.Series[0].Values)

	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/api/v1/devices/ghost/telemetry", http.StatusNotFound},
		{"/api/v1/devices/hist-1/telemetry?from=yesterday", http.StatusBadRequest},
		{"/api/v1/devices/hist-1/telemetry?every=0s", http.StatusBadRequest},
		{"/api/v1/devices/hist-1/telemetry?agg=median&every=1m", http.StatusBadRequest},
		{"/api/v1/devices/hist-1/telemetry?from=-1h&to=-2h", http.StatusBadRequest},
		{"/api/v1/devices/hist-1/telemetry?from=-8760h&every=1ms", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		r, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		r.Body.Close()
		require.Equal(t, tc.status, r.StatusCode, tc.path)
		require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	}
}
