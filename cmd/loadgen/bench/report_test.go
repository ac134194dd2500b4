package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

func TestSeriesMax(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []IngestStep
		want  float64
		all   bool
	}{
		{"none", nil, 0, false},
		{"first fails", []IngestStep{{Rate: 5000}}, 0, false},
		{"fails at the third", []IngestStep{{Rate: 5000, Pass: true}, {Rate: 10000, Pass: true}, {Rate: 20000}}, 10000, false},
		{"every step passed", []IngestStep{{Rate: 5000, Pass: true}, {Rate: 10000, Pass: true}}, 10000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, all := IngestSeries{Steps: tc.steps}.Max()
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.all, all)
		})
	}
}

// The report replaces only its own part of BENCHMARKS.md: what others wrote
// before and after it stays.
func TestWriteReportKeepsOtherSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	rep := &Report{Mode: "quick", Start: time.Unix(1700000000, 0), End: time.Unix(1700000300, 0),
		Ingest: []IngestSeries{
			{System: "Telehub", QoS: 1, Steps: []IngestStep{{Rate: 5000, Pass: true}, {Rate: 10000, Why: "x"}}},
			{System: "Mosquitto + Telegraf", QoS: 1, Steps: []IngestStep{{Rate: 5000, Pass: true, PublishResult: load.PublishResult{Sent: 20000}}, {Rate: 10000}}},
		},
		Memory: []MemoryRow{{"Telehub (embedded store)", 20 * 1024}, {"mochi-mqtt bare", 10 * 1024}}}
	require.NoError(t, writeReport(path, rep))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := string(b)
	require.Contains(t, s, "| idle hub < 30 MB resident | 20.0 MB | **met** |")
	require.Contains(t, s, "| ingest ≥ 1.5x Mosquitto + Telegraf (QoS 1) | 1.00x | **not met** |")
	require.Contains(t, s, "| mochi-mqtt bare | 10.0 MB | 2.00x |")

	os.WriteFile(path, []byte("# Benchmarks\n\nintro\n\n"+s[strings.Index(s, beginMark):]+"\n## Alert rules\n\nrules figures\n"), 0o644)
	rep.Memory[0].RSSKB = 25 * 1024
	require.NoError(t, writeReport(path, rep))
	b, _ = os.ReadFile(path)
	s = string(b)
	require.True(t, strings.HasPrefix(s, "# Benchmarks\n\nintro\n\n"+beginMark), s)
	require.True(t, strings.HasSuffix(s, endMark+"\n\n## Alert rules\n\nrules figures\n"), s)
	require.Contains(t, s, "| idle hub < 30 MB resident | 25.0 MB | **met** |")
	require.Equal(t, 1, strings.Count(s, beginMark))
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "1,234,567", num(1234567))
	require.Equal(t, "999", num(999))
	require.Equal(t, "0.25 ms", ms(250*time.Microsecond))
	require.Equal(t, "12.3 ms", ms(12300*time.Microsecond))
	require.Equal(t, "1500 ms", ms(1500*time.Millisecond))
	require.Equal(t, "n/a", ratio(1, 0))
	require.Equal(t, "1.50x", ratio(3, 2))
}
