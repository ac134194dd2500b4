package ingest

// The latest-value cache: the newest value of every field of every device,
// which device listings show.

import (
	"strings"
	"sync"
	"time"
)

// Latest keeps the most recent value of every field of every device, for
// device listings. Safe for concurrent use.
type Latest struct {
	mu   sync.RWMutex
	devs map[string]*latestDev
}

type latestDev struct {
	ts     time.Time
	fields map[string]Value
}

// NewLatest returns an empty cache.
func NewLatest() *Latest { return &Latest{devs: map[string]*latestDev{}} }

// Update merges a point into the device's latest values; older points only
// fill fields not seen yet.
func (l *Latest) Update(id string, pt Point) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.devs[id]
	if d == nil {
		d = &latestDev{fields: make(map[string]Value, len(pt.Fields))}
		l.devs[id] = d
	}
	newer := !pt.Time.Before(d.ts)
	if newer {
		d.ts = pt.Time
	}
	for _, f := range pt.Fields {
		// Decoded names and strings share the payload's buffer: copy what
		// the cache keeps so that it does not pin whole payloads.
		v := f.Value
		if v.Kind == KindString {
			v.Str = strings.Clone(v.Str)
		}
		if _, ok := d.fields[f.Name]; !ok {
			d.fields[strings.Clone(f.Name)] = v
		} else if newer {
			d.fields[f.Name] = v
		}
	}
}

// Get returns the time of the newest reading and a copy of the latest fields.
func (l *Latest) Get(id string) (time.Time, map[string]any) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	d := l.devs[id]
	if d == nil {
		return time.Time{}, nil
	}
	out := make(map[string]any, len(d.fields))
	for k, v := range d.fields {
		out[k] = v.Any()
	}
	return d.ts, out
}

// Forget drops a device's values.
func (l *Latest) Forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.devs, id)
}
