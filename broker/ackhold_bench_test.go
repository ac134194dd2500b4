package broker

import (
	"io"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telehub/telehub/internal/wal"
)

// BenchmarkAckHold holds a PUBACK for each publish and releases it with its
// commit, without and with the PUBACK latency histogram, for its cost.
func BenchmarkAckHold(b *testing.B) {
	for _, bc := range []struct {
		name    string
		latency prometheus.Observer
	}{
		{"unobserved", nil},
		{"observed", prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv, cli := net.Pipe()
			a := newAckHold(srv, bc.latency)
			go io.Copy(io.Discard, cli)
			defer func() { a.Close(); cli.Close() }()
			puback := []byte{0x40, 2, 0, 1}
			b.ReportAllocs()
			for b.Loop() {
				// The commit is done before the hold: with the log's
				// commits on another goroutine, a loop that completed them
				// itself would wait for its own hold past maxHolds.
				c, done := wal.NewCommit()
				done(nil)
				if err := a.hold(c); err != nil {
					b.Fatal(err)
				}
				if _, err := a.Write(puback); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
