package store

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// FuzzChunk feeds arbitrary bytes to the chunk reader (a damaged
// history.db must cost an error, not the hub), and checks that samples
// added to a head series in any order come back sorted, one per time, the
// last added winning.
func FuzzChunk(f *testing.F) {
	var s series
	s.add(5, ingest.Number(1))
	s.add(3, ingest.String("x"))
	s.add(9, ingest.Bool(true))
	f.Add(s.chunk(), []byte{5, 3, 9, 3, 200})
	f.Add([]byte{0xff, 0xff, 0xff}, []byte{})
	f.Fuzz(func(t *testing.T, raw, times []byte) {
		if ref, err := newChunkRef(1, raw); err == nil {
			merge([]chunkRef{ref}, math.MinInt64, math.MaxInt64, func(sample) {})
		}

		var s series
		want := map[int64]ingest.Value{}
		for i, b := range times {
			t, v := int64(b)-100, ingest.Number(float64(i))
			s.add(t, v)
			want[t] = v
		}
		if len(times) == 0 {
			return
		}
		ref, err := newChunkRef(1, s.chunk())
		require.NoError(t, err)
		var got []sample
		merge([]chunkRef{ref}, math.MinInt64, math.MaxInt64, func(x sample) { got = append(got, x) })
		require.Len(t, got, len(want))
		for i, x := range got {
			require.Equal(t, want[x.t], x.v)
			if i > 0 {
				require.Less(t, got[i-1].t, x.t)
			}
		}
	})
}
