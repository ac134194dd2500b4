// Package metrics is a small Prometheus text-format registry of counters and
// gauges, enough for the hub's /metrics without a client library.
package metrics

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// Counter is a monotonically increasing count. Safe for concurrent use.
type Counter struct{ v atomic.Uint64 }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is a value that goes up and down. Safe for concurrent use.
type Gauge struct{ v atomic.Int64 }

// Set sets the value.
func (g *Gauge) Set(v int64) { g.v.Store(v) }

// Value returns the value.
func (g *Gauge) Value() int64 { return g.v.Load() }

type entry struct {
	name, help, typ string
	value           func() float64
}

// Registry holds named metrics. Safe for concurrent use.
type Registry struct {
	mu      sync.Mutex
	entries []entry
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

// Counter registers and returns a counter. name may carry labels, e.g.
// `telehub_ingest_rejected_total{reason="decode"}`; entries sharing a base
// name share one HELP line.
func (r *Registry) Counter(name, help string) *Counter {
	c := &Counter{}
	r.add(entry{name, help, "counter", func() float64 { return float64(c.Value()) }})
	return c
}

// Gauge registers and returns a gauge.
func (r *Registry) Gauge(name, help string) *Gauge {
	g := &Gauge{}
	r.add(entry{name, help, "gauge", func() float64 { return float64(g.Value()) }})
	return g
}

// GaugeFunc registers a gauge whose value is read when scraped.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.add(entry{name, help, "gauge", f})
}

// CounterFunc registers a counter whose value is read when scraped, for
// counts kept elsewhere (a library's own statistics).
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.add(entry{name, help, "counter", f})
}

func (r *Registry) add(e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, e)
}

func base(name string) string {
	for i := range len(name) {
		if name[i] == '{' {
			return name[:i]
		}
	}
	return name
}

// WriteText writes every metric in the Prometheus text exposition format.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	es := slices.Clone(r.entries)
	r.mu.Unlock()
	slices.SortStableFunc(es, func(a, b entry) int {
		switch ba, bb := base(a.name), base(b.name); {
		case ba < bb:
			return -1
		case ba > bb:
			return 1
		}
		return 0
	})
	last := ""
	for _, e := range es {
		if b := base(e.name); b != last {
			if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", b, e.help, b, e.typ); err != nil {
				return err
			}
			last = b
		}
		if _, err := fmt.Fprintf(w, "%s %g\n", e.name, e.value()); err != nil {
			return err
		}
	}
	return nil
}
