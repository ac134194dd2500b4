package live

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReadReplaysAfterSeqAndReportsGap(t *testing.T) {
	h := New(16)
	for i := range 10 {
		h.Publish(Message{Kind: "reading", Body: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	require.Equal(t, uint64(10), h.Last())

	msgs, missed := h.Read(4, nil, 100)
	require.Zero(t, missed)
	require.Len(t, msgs, 6)
	require.Equal(t, uint64(5), msgs[0].Seq)
	require.Equal(t, `{"seq":5,"kind":"reading"}`, string(Message{Seq: 5, Body: []byte(`{"kind":"reading"}`)}.AppendFrame(nil)))
	require.Equal(t, `{"seq":7,"n":6}`, string(msgs[2].AppendFrame(nil)))

	for range 20 {
		h.Publish(Message{Body: []byte(`{}`)})
	}
	msgs, missed = h.Read(4, nil, 100)
	require.Equal(t, uint64(10), missed, "seq 5..14 left the ring of 16")
	require.Equal(t, uint64(15), msgs[0].Seq)
	require.Equal(t, uint64(30), msgs[len(msgs)-1].Seq)
	require.Equal(t, `{"seq":30}`, string(msgs[len(msgs)-1].AppendFrame(nil)))

	msgs, _ = h.Read(25, nil, 2)
	require.Len(t, msgs, 2, "max bounds a read")
}

func TestChangedWakesEveryReader(t *testing.T) {
	h := New(64)
	var wg sync.WaitGroup
	got := make([]uint64, 8)
	ready := make(chan struct{}, 8)
	for i := range got {
		wg.Go(func() {
			ch := h.Changed()
			ready <- struct{}{}
			<-ch
			msgs, _ := h.Read(0, nil, 10)
			got[i] = msgs[0].Seq
		})
	}
	for range got {
		<-ready
	}
	h.Publish(Message{Body: []byte(`{}`)})
	wg.Wait()
	for _, s := range got {
		require.Equal(t, uint64(1), s)
	}
}

func TestEventCarriesPayloadUnderItsKind(t *testing.T) {
	m, err := Event(KindAlert, "t1", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), map[string]any{"state": "firing"})
	require.NoError(t, err)
	m.Seq = 7
	require.JSONEq(t, `{"seq":7,"kind":"alert","device_id":"t1","ts":"2026-01-01T00:00:00Z","alert":{"state":"firing"}}`, string(m.AppendFrame(nil)))
}
