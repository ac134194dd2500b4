package live

import (
	"fmt"
	"sync"
	"testing"
)

// BenchmarkPublish is the cost of publishing one reading with nobody
// reading: what every ingested reading pays.
func BenchmarkPublish(b *testing.B) {
	h := New(65536)
	m := Message{Kind: KindReading, DeviceID: "t1", Body: []byte(`{"kind":"reading","device_id":"t1","fields":{"t":21.5}}`)}
	b.ReportAllocs()
	for b.Loop() {
		h.Publish(m)
	}
}

// BenchmarkFanout is the cost of one published message delivered to every
// reader: each reader waits on Changed and reads in batches, as the
// WebSocket writers do (without the socket).
func BenchmarkFanout(b *testing.B) {
	for _, readers := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			h := New(65536)
			m := Message{Kind: KindReading, DeviceID: "t1", Body: []byte(`{"kind":"reading","device_id":"t1","fields":{"t":21.5}}`)}
			total := uint64(b.N)
			var wg sync.WaitGroup
			ready := make(chan struct{}, readers)
			for range readers {
				wg.Go(func() {
					var after uint64
					buf := make([]Message, 0, 256)
					ready <- struct{}{}
					for after < total {
						ch := h.Changed()
						msgs, missed := h.Read(after, buf[:0], 256)
						after += missed + uint64(len(msgs))
						if len(msgs) == 0 && missed == 0 {
							<-ch
						}
					}
				})
			}
			for range readers {
				<-ready
			}
			b.ResetTimer()
			for range b.N {
				h.Publish(m)
			}
			wg.Wait()
		})
	}
}
