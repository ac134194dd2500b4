package load

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAppendReadingIsTheDocumentedJSON(t *testing.T) {
	sent := time.UnixMicro(1732350000123456)
	b := AppendReading(nil, 1732350000123, 1234, sent)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "%s", b)
	require.Len(t, m, Fields)
	require.Equal(t, `{"ts":1732350000123,"temperature":19.34,"humidity":58.4,"battery":99,"seq":1234,"sent_us":1732350000123456}`, string(b))
	at, ok := SentAt(b)
	require.True(t, ok)
	require.Equal(t, sent, at)
}

func TestSentAt(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want int64
		ok   bool
	}{
		{"integer", `{"sent_us":1732350000123456}`, 1732350000123456, true},
		{"float as the hub writes it", `{"seq":3,"fields":{"seq":1,"sent_us":1.732350000123456e+15}}`, 1732350000123456, true},
		{"missing", `{"kind":"reading","fields":{"t":1}}`, 0, false},
		{"not a number", `{"sent_us":"x"}`, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, ok := SentAt([]byte(tc.doc))
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.want, at.UnixMicro())
			}
		})
	}
}

func TestAppendLineMatchesTheReading(t *testing.T) {
	b := AppendLine(nil, "bench-000001", 1732350000123, 1234, time.UnixMicro(1732350000123456))
	require.Equal(t, "bench-000001,device_type=thermostat temperature=19.34,humidity=58.4,battery=99,seq=1234,sent_us=1732350000123456 1732350000123", string(b))
}

func TestSourceIP(t *testing.T) {
	require.Nil(t, SourceIP(5, 0))
	require.Equal(t, "127.0.0.2", SourceIP(0, 16).String())
	require.Equal(t, "127.0.0.17", SourceIP(15, 16).String())
	require.Equal(t, "127.0.0.2", SourceIP(16, 16).String())
	require.Equal(t, "127.0.1.2", SourceIP(254, 300).String())
}
