package devices

import (
	"sync"
	"sync/atomic"
	"time"
)

// Connection describes a device's open MQTT connection.
type Connection struct {
	ClientID    string    `json:"client_id"`
	Remote      string    `json:"remote"`
	Protocol    string    `json:"protocol"` // "3.1.1" or "5"
	ConnectedAt time.Time `json:"connected_at"`
}

// PresenceEvent is a device going online or offline.
type PresenceEvent struct {
	DeviceID   string      `json:"device_id"`
	Online     bool        `json:"online"`
	At         time.Time   `json:"at"`
	Reason     string      `json:"reason,omitempty"`
	Connection *Connection `json:"connection,omitempty"`
}

// Status is what is known of a device's presence.
type Status struct {
	Online     bool        `json:"online"`
	LastSeen   *time.Time  `json:"last_seen,omitempty"`
	Connection *Connection `json:"connection,omitempty"`
}

type presence struct {
	online   bool
	session  any // the broker's handle of the current connection
	conn     Connection
	lastSeen atomic.Int64 // unix nanos of the last message received
}

// Presence tracks which devices are connected. One connection per device
// counts: a newer one takes over from an older one. Safe for concurrent use.
type Presence struct {
	mu        sync.RWMutex
	devs      map[string]*presence
	listeners []func(PresenceEvent)
}

// NewPresence returns an empty tracker.
func NewPresence() *Presence { return &Presence{devs: map[string]*presence{}} }

// OnChange registers fn to be called on every change, synchronously and in
// order; fn must not block. Register before the broker starts.
func (p *Presence) OnChange(fn func(PresenceEvent)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listeners = append(p.listeners, fn)
}

// Connected records a new connection of the device and returns the session
// handle of the connection it replaces, if one was still open.
func (p *Presence) Connected(id string, session any, c Connection) (replaced any) {
	p.mu.Lock()
	d := p.devs[id]
	if d == nil {
		d = &presence{}
		p.devs[id] = d
	}
	if d.online {
		replaced = d.session
	}
	d.online, d.session, d.conn = true, session, c
	d.lastSeen.Store(c.ConnectedAt.UnixNano())
	ls := p.listeners
	conn := c
	p.mu.Unlock()
	p.emit(ls, PresenceEvent{DeviceID: id, Online: true, At: c.ConnectedAt, Connection: &conn})
	return replaced
}

// Disconnected records that a connection closed. It is ignored unless the
// connection is the device's current one (an old connection closing after a
// takeover changes nothing).
func (p *Presence) Disconnected(id string, session any, reason string, at time.Time) {
	p.mu.Lock()
	d := p.devs[id]
	if d == nil || !d.online || d.session != session {
		p.mu.Unlock()
		return
	}
	d.online, d.session = false, nil
	ls := p.listeners
	p.mu.Unlock()
	p.emit(ls, PresenceEvent{DeviceID: id, Online: false, At: at, Reason: reason})
}

// Seen records that a message arrived from the device.
func (p *Presence) Seen(id string, at time.Time) {
	p.mu.RLock()
	d := p.devs[id]
	p.mu.RUnlock()
	if d != nil {
		d.lastSeen.Store(at.UnixNano())
	}
}

// Get returns the device's presence.
func (p *Presence) Get(id string) Status {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := p.devs[id]
	if d == nil {
		return Status{}
	}
	s := Status{Online: d.online}
	if ns := d.lastSeen.Load(); ns != 0 {
		t := time.Unix(0, ns).UTC()
		s.LastSeen = &t
	}
	if d.online {
		c := d.conn
		s.Connection = &c
	}
	return s
}

// Session returns the broker's handle of the device's open connection, nil
// when it is offline.
func (p *Presence) Session(id string) any {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if d := p.devs[id]; d != nil && d.online {
		return d.session
	}
	return nil
}

// Online reports whether the device is connected.
func (p *Presence) Online(id string) bool { return p.Get(id).Online }

// Forget drops a deleted device.
func (p *Presence) Forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.devs, id)
}

func (p *Presence) emit(ls []func(PresenceEvent), ev PresenceEvent) {
	for _, fn := range ls {
		fn(ev)
	}
}
