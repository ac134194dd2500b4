package web

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
)

// Filter selects the messages a live stream client receives. Empty members
// match everything. Fields narrows readings to those fields (readings with
// none of them are skipped); Kinds are reading, presence, alert, command,
// state.
type Filter struct {
	Devices []string `json:"devices,omitempty"`
	Types   []string `json:"types,omitempty"`
	Labels  string   `json:"labels,omitempty"`
	Fields  []string `json:"fields,omitempty"`
	Kinds   []string `json:"kinds,omitempty"`
}

// compiledFilter is a Filter ready to match.
type compiledFilter struct {
	Filter
	selector devices.Selector
	empty    bool
}

func (f Filter) compile() (compiledFilter, error) {
	sel, err := devices.ParseSelector(f.Labels)
	if err != nil {
		return compiledFilter{}, err
	}
	for _, k := range f.Kinds {
		switch k {
		case live.KindReading, live.KindPresence, live.KindAlert, live.KindCommand, live.KindState:
		default:
			return compiledFilter{}, fmt.Errorf("kind %q: use reading, presence, alert, command or state", k)
		}
	}
	empty := len(f.Devices) == 0 && len(f.Types) == 0 && len(sel) == 0 && len(f.Fields) == 0 && len(f.Kinds) == 0
	return compiledFilter{Filter: f, selector: sel, empty: empty}, nil
}

// filterFromQuery reads devices, types, labels, fields and kinds
// (comma-separated) from URL parameters.
func filterFromQuery(q url.Values) (compiledFilter, error) {
	split := func(k string) []string {
		var out []string
		for v := range strings.SplitSeq(q.Get(k), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	return Filter{Devices: split("devices"), Types: split("types"), Labels: q.Get("labels"),
		Fields: split("fields"), Kinds: split("kinds")}.compile()
}

// StreamConfig sizes the live stream.
type StreamConfig struct {
	// ConflateAbove is how far (in messages) a client may lag before its
	// readings are conflated to the latest value per device and field.
	ConflateAbove uint64
	// PollWait is how long a long poll waits for a message.
	PollWait time.Duration
	// WriteEvery is the shortest time between two writes to a WebSocket
	// or SSE client: what arrives meanwhile goes out together in the next
	// write. Zero (unlike the other members, not replaced by a default)
	// writes as soon as a message arrives.
	WriteEvery time.Duration
}

// cursor is one client's position in the live stream and what it wants.
type cursor struct {
	after  uint64
	filter compiledFilter
	buf    []live.Message
	out    []frame
	// enc holds the encoded frames of out: one buffer for a batch instead
	// of an allocation per message and client.
	enc []byte
	// opened is when the client connected, oldest the publish time of the
	// oldest message of the last read published since then (0: none); in
	// Unix nanoseconds, for the stream delay (a replay is not a delay).
	opened, oldest int64
}

// frame is one message ready to send.
type frame struct {
	seq  uint64
	data []byte
}

// read returns the next frames for the client without blocking: filtered,
// and conflated when the client lags by more than ConflateAbove. A client
// that fell out of the replay buffer first gets a gap message. The frames
// are valid until the next read.
func (s *Server) read(c *cursor) []frame {
	c.out, c.oldest = c.out[:0], 0
	if cap(c.enc) > 1<<20 {
		c.enc = nil // do not keep what a burst of conflated readings needed
	}
	c.enc = c.enc[:0]
	first, last := s.deps.Stream.First(), s.deps.Stream.Last()
	switch {
	case c.after == 0:
		// since=0: from the start of this run, as far as it is buffered.
		c.after = first - 1
	case c.after > last || c.after+1 < first:
		// A seq of another run of the hub: say so, and go on from now.
		c.out = append(c.out, frame{data: fmt.Appendf(nil, `{"kind":"gap","reset":true,"next":%d}`, last+1)})
		c.after = last
		return c.out
	}
	lag := last - c.after
	conflate := s.stream.ConflateAbove > 0 && lag > s.stream.ConflateAbove
	var merged map[string]*mergedReading
	for {
		var missed uint64
		c.buf, missed = s.deps.Stream.Read(c.after, c.buf[:0], readBatch)
		if missed > 0 {
			c.out = append(c.out, frame{seq: 0, data: fmt.Appendf(nil, `{"kind":"gap","missed":%d,"next":%d}`, missed, c.buf[0].Seq)})
		}
		for _, m := range c.buf {
			c.after = m.Seq
			m, ok := s.match(c, m)
			if !ok {
				continue
			}
			if c.oldest == 0 && m.At >= c.opened {
				c.oldest = m.At
			}
			if conflate && m.Kind == live.KindReading {
				if merged == nil {
					merged = map[string]*mergedReading{}
				}
				if mergeReading(merged, m) {
					continue
				}
			}
			start := len(c.enc)
			c.enc = m.AppendFrame(c.enc)
			c.out = append(c.out, frame{seq: m.Seq, data: c.enc[start:len(c.enc):len(c.enc)]})
		}
		if !conflate || len(c.buf) < readBatch {
			break
		}
	}
	if len(merged) > 0 {
		for _, mr := range merged {
			c.out = append(c.out, mr.frame())
		}
		slices.SortStableFunc(c.out, func(a, b frame) int { return cmp.Compare(a.seq, b.seq) })
	}
	return c.out
}

// match applies the client's filter; a field filter rewrites a reading to the
// fields asked for.
func (s *Server) match(c *cursor, m live.Message) (live.Message, bool) {
	f := c.filter
	if f.empty {
		return m, true
	}
	if len(f.Kinds) > 0 && !slices.Contains(f.Kinds, m.Kind) {
		return m, false
	}
	if len(f.Devices) > 0 && !slices.Contains(f.Devices, m.DeviceID) {
		return m, false
	}
	if len(f.Types) > 0 || len(f.selector) > 0 {
		d, ok := s.deps.Registry.Get(m.DeviceID)
		if !ok || (len(f.Types) > 0 && !slices.Contains(f.Types, d.Type)) || !f.selector.Matches(d.Labels) {
			return m, false
		}
	}
	if len(f.Fields) > 0 && m.Kind == live.KindReading {
		r, ok := readingOf(m)
		if !ok {
			return m, true
		}
		var keep []ingest.Field
		for _, fl := range r.Fields {
			if slices.Contains(f.Fields, fl.Name) {
				keep = append(keep, fl)
			}
		}
		if len(keep) == 0 {
			return m, false
		}
		if len(keep) < len(r.Fields) {
			r.Fields = keep
			m.Data, m.Body = r, ingest.ReadingBody(nil, r)
		}
	}
	return m, true
}

// readingOf returns the reading a message carries, if any.
func readingOf(m live.Message) (ingest.Reading, bool) {
	switch d := m.Data.(type) {
	case *ingest.LiveReading:
		return d.Reading, true
	case ingest.Reading:
		return d, true
	}
	return ingest.Reading{}, false
}

// mergedReading is the latest value of each field of one device across the
// readings a lagging client skipped.
type mergedReading struct {
	seq    uint64
	r      ingest.Reading
	fields map[string]ingest.Value
	order  []string
	count  int
}

// mergeReading folds a reading message into merged; false if the message
// carries no structured reading (it is then sent as it is).
func mergeReading(merged map[string]*mergedReading, m live.Message) bool {
	r, ok := readingOf(m)
	if !ok {
		return false
	}
	mr := merged[m.DeviceID]
	if mr == nil {
		mr = &mergedReading{fields: map[string]ingest.Value{}}
		merged[m.DeviceID] = mr
	}
	mr.seq, mr.r, mr.count = m.Seq, r, mr.count+1
	for _, f := range r.Fields {
		if _, ok := mr.fields[f.Name]; !ok {
			mr.order = append(mr.order, f.Name)
		}
		mr.fields[f.Name] = f.Value
	}
	return true
}

func (mr *mergedReading) frame() frame {
	r := mr.r
	r.Fields = make([]ingest.Field, 0, len(mr.order))
	slices.Sort(mr.order)
	for _, n := range mr.order {
		r.Fields = append(r.Fields, ingest.Field{Name: n, Value: mr.fields[n]})
	}
	body := ingest.ReadingBody(nil, r)
	// Mark it: {"kind":"reading",...,"conflated":N}
	body = append(body[:len(body)-1], fmt.Sprintf(`,"conflated":%d}`, mr.count)...)
	return frame{seq: mr.seq, data: live.Message{Seq: mr.seq, Body: body}.AppendFrame(nil)}
}

// clientMessage is what a WebSocket client may send: a new filter, or (with
// the operator role) a command for a device. Ref is echoed in the answer.
type clientMessage struct {
	Type     string `json:"type"`
	Filter   Filter `json:"filter"`
	Ref      string `json:"ref"`
	DeviceID string `json:"device_id"`
	commandRequest
}

// parseClientMessage reads a control message from a WebSocket client.
func parseClientMessage(b []byte) (clientMessage, error) {
	var m clientMessage
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("invalid message: %w", err)
	}
	if m.Type != "subscribe" && m.Type != "command" {
		return m, errors.New(`unknown message type; send {"type":"subscribe","filter":{...}} or {"type":"command","device_id":...,"name":...,"params":{...}}`)
	}
	return m, nil
}

// sinceParam reads the resume position: since, or SSE's Last-Event-ID.
func sinceParam(v string, def uint64) (uint64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, errors.New("since must be a sequence number")
	}
	return n, nil
}
