package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/internal/auth"
)

const (
	writeWait  = 10 * time.Second
	pongWait   = 60 * time.Second
	pingPeriod = pongWait * 9 / 10
	readBatch  = 256
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 16 << 10,
	// Access is by token or ticket, not by cookie, so a foreign page gains
	// nothing by opening a socket.
	CheckOrigin: func(*http.Request) bool { return true },
}

// openCursor reads the filter and the resume position of a stream request.
// Without since (or Last-Event-ID) the client starts with new messages.
func (s *Server) openCursor(w http.ResponseWriter, r *http.Request) (*cursor, bool) {
	f, err := filterFromQuery(r.URL.Query())
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid filter", err.Error())
		return nil, false
	}
	since := r.URL.Query().Get("since")
	if since == "" {
		since = r.Header.Get("Last-Event-ID")
	}
	after, err := sinceParam(since, s.deps.Stream.Last())
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid since", err.Error())
		return nil, false
	}
	return &cursor{after: after, filter: f, opened: time.Now().UnixNano()}, true
}

// live upgrades to a WebSocket that streams the live stream as JSON text
// frames, one message each. The client may change its filter at any time by
// sending {"type":"subscribe","filter":{...}}.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	cur, ok := s.openCursor(w, r)
	if !ok {
		return
	}
	hj := &gatherHijacker{ResponseWriter: w}
	conn, err := upgrader.Upgrade(hj, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	s.open["websocket"].Add(1)
	defer s.open["websocket"].Add(-1)
	ctx, cancel := context.WithCancel(s.ctx)
	filters := make(chan filterUpdate, 1)
	replies := make(chan []byte, 16) // answers to commands; a client that floods waits
	who := Principal(r.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel()
		s.readPump(ctx, conn, who, filters, replies)
	})
	s.writePump(ctx, conn, hj.conn, cur, newTokenWatch(s, who), filters, replies)
	cancel()
	conn.Close()
	wg.Wait()
}

// filterUpdate is a subscribe message from the client, or why it was refused.
type filterUpdate struct {
	filter compiledFilter
	err    error
}

// readPump reads client messages and notices when the client goes away. A
// new filter replaces a pending one (latest wins); an invalid message gets
// an error frame from the writer.
func (s *Server) readPump(ctx context.Context, conn *websocket.Conn, who auth.Token, filters chan filterUpdate, replies chan<- []byte) {
	conn.SetReadLimit(64 << 10)
	conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		conn.SetReadDeadline(time.Now().Add(pongWait))
		var u filterUpdate
		m, err := parseClientMessage(b)
		if err == nil && m.Type == "command" {
			select {
			case replies <- s.socketCommand(ctx, who, m):
				continue
			case <-ctx.Done():
				return
			}
		}
		if err == nil {
			u.filter, err = m.Filter.compile()
		}
		u.err = err
		select {
		case <-filters:
		default:
		}
		filters <- u
	}
}

// writePump owns every write to the connection: messages, pings, the close.
// The messages read in one go are sent with one write (see gatherConn).
func (s *Server) writePump(ctx context.Context, conn *websocket.Conn, gc *gatherConn, cur *cursor, tw *tokenWatch, filters chan filterUpdate, replies <-chan []byte) {
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	var p pacer
	defer p.stop()
	for {
		if !p.wait(ctx) {
			goingAway(conn)
			return
		}
		if !tw.valid() {
			revoked(conn)
			return
		}
		ch := s.deps.Stream.Changed()
		frames := s.read(cur)
		if len(frames) > 0 {
			if !writeFrames(conn, gc, frames) {
				return
			}
			s.wrote(cur)
			p.wrote(s.stream.WriteEvery)
			if s.deps.Stream.Last() > cur.after {
				continue
			}
		}
		select {
		case <-ch:
		case <-tw.changed:
			// checked at the top of the loop
		case msg := <-replies:
			if !write(conn, msg) {
				return
			}
		case u := <-filters:
			if u.err != nil {
				msg, _ := json.Marshal(map[string]string{"kind": "error", "error": u.err.Error()})
				if !write(conn, msg) {
					return
				}
				continue
			}
			cur.filter = u.filter
			if !write(conn, []byte(`{"kind":"subscribed"}`)) {
				return
			}
		case <-ping.C:
			conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		case <-ctx.Done():
			goingAway(conn)
			return
		}
	}
}

// socketCommand submits a command sent over the socket and returns the
// answer frame: {"kind":"command_ack","ref":..,"command":{..}} or
// {"kind":"error","ref":..,"status":..,"error":..}.
func (s *Server) socketCommand(ctx context.Context, who auth.Token, m clientMessage) []byte {
	fail := func(status int, msg string) []byte {
		b, _ := json.Marshal(map[string]any{"kind": "error", "ref": m.Ref, "status": status, "error": msg})
		return b
	}
	// The token as it is now: deleted, it sends nothing; its role now is
	// the one that counts.
	who, ok := s.deps.Tokens.Get(who.ID)
	if !ok {
		return fail(http.StatusUnauthorized, "the token was revoked")
	}
	if who.Role < auth.Operator {
		return fail(http.StatusForbidden, "sending commands needs the operator role; the token has "+who.Role.String())
	}
	if s.deps.Commands == nil {
		return fail(http.StatusNotImplemented, "commands are not available")
	}
	cr := control.CommandRequest{DeviceID: m.DeviceID, Name: m.Name, Params: m.Params, Timeout: time.Duration(m.Timeout),
		IdempotencyKey: m.IdempotencyKey, By: Who(context.WithValue(ctx, principalKey{}, who))}
	if m.ExpiresAt != nil {
		cr.ExpiresAt = *m.ExpiresAt
	}
	cmd, _, err := s.deps.Commands.Submit(cr)
	var ve *devices.ValidationError
	switch {
	case errors.Is(err, devices.ErrNotFound):
		return fail(http.StatusNotFound, "no device with id "+m.DeviceID)
	case errors.As(err, &ve):
		return fail(http.StatusBadRequest, ve.Error())
	case errors.Is(err, control.ErrIdempotencyConflict):
		return fail(http.StatusUnprocessableEntity, "the idempotency key was used for a different command")
	case errors.Is(err, control.ErrQueueFull):
		return fail(http.StatusTooManyRequests, "the device has too many pending commands")
	case err != nil:
		s.deps.Logger.Error("submit command from socket", "device_id", m.DeviceID, "err", err)
		return fail(http.StatusInternalServerError, "the command could not be stored")
	}
	b, _ := json.Marshal(map[string]any{"kind": "command_ack", "ref": m.Ref, "command": cmd})
	return b
}

// revoked tells the client that its token was deleted or lost the role
// the stream needs (close code 1008, policy violation).
func revoked(conn *websocket.Conn) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "token revoked"))
}

// tokenWatch tells a stream when its token was deleted or lost the role
// the stream needs. The token store closes changed when any token loses
// rights; valid then looks the stream's token up again (a map lookup), so
// streams never poll the store.
type tokenWatch struct {
	s       *Server
	who     auth.Token
	changed <-chan struct{}
}

// newTokenWatch starts watching who. Its first valid call looks the token
// up, which covers a deletion between authentication and now.
func newTokenWatch(s *Server, who auth.Token) *tokenWatch {
	return &tokenWatch{s: s, who: who, changed: closedChan}
}

// closedChan is always ready.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// valid reports whether the token still opens the stream: true until the
// store has changed and the token is gone or below the viewer role.
func (tw *tokenWatch) valid() bool {
	select {
	case <-tw.changed:
	default:
		return true
	}
	tw.changed = tw.s.deps.Tokens.Changed() // before the lookup: a change meanwhile fires it
	_, ok := tw.s.current(tw.who, auth.Viewer)
	return ok
}

// goingAway tells the client that the hub stops (or its reader ended).
func goingAway(conn *websocket.Conn) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "hub stopping"))
}

// writeFrames sends frames, one WebSocket message each, in as few writes
// as maxGather allows.
func writeFrames(conn *websocket.Conn, gc *gatherConn, frames []frame) bool {
	deadline := time.Now().Add(writeWait)
	conn.SetWriteDeadline(deadline)
	gc.gather()
	for _, f := range frames {
		if err := conn.WriteMessage(websocket.TextMessage, f.data); err != nil {
			gc.flush(deadline)
			return false
		}
		if gc.gathered() >= maxGather {
			if gc.flush(deadline) != nil {
				return false
			}
			gc.gather()
		}
	}
	return gc.flush(deadline) == nil
}

func write(conn *websocket.Conn, frame []byte) bool {
	conn.SetWriteDeadline(time.Now().Add(writeWait))
	return conn.WriteMessage(websocket.TextMessage, frame) == nil
}

// events serves the live stream as Server-Sent Events: each message is an
// event whose id is its seq, so a reconnecting EventSource resumes through
// Last-Event-ID.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	cur, ok := s.openCursor(w, r)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{}) // the request is read; the stream outlives http.read_timeout
	s.open["sse"].Add(1)
	defer s.open["sse"].Add(-1)
	tw := newTokenWatch(s, Principal(r.Context()))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc.Flush() // the client sees the stream open before the first message
	ctx := r.Context()
	ping := time.NewTicker(pingPeriod / 2)
	defer ping.Stop()
	var buf []byte
	var p pacer
	defer p.stop()
	for {
		if !p.wait(ctx) || s.ctx.Err() != nil || !tw.valid() {
			return
		}
		ch := s.deps.Stream.Changed()
		frames := s.read(cur)
		buf = buf[:0]
		for _, f := range frames {
			if f.seq > 0 {
				buf = append(buf, "id: "...)
				buf = strconv.AppendUint(buf, f.seq, 10)
				buf = append(buf, '\n')
			}
			buf = append(buf, "data: "...)
			buf = append(buf, f.data...)
			buf = append(buf, "\n\n"...)
		}
		if len(buf) > 0 {
			rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
			s.wrote(cur)
			p.wrote(s.stream.WriteEvery)
		}
		if len(frames) > 0 && s.deps.Stream.Last() > cur.after {
			continue
		}
		select {
		case <-ch:
		case <-tw.changed:
		case <-ping.C:
			rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := w.Write([]byte(": ping\n\n")); err != nil || rc.Flush() != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// poll serves long polling: the messages after since, waiting up to
// PollWait for the first one. The answer's next is the since of the next
// poll.
func (s *Server) poll(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("since") == "" {
		problem(w, http.StatusBadRequest, "invalid since", "since is required: 0 for everything still buffered, or the next of the previous answer")
		return
	}
	cur, ok := s.openCursor(w, r)
	if !ok {
		return
	}
	http.NewResponseController(w).SetReadDeadline(time.Time{}) // a poll may wait longer than http.read_timeout
	s.open["poll"].Add(1)
	defer s.open["poll"].Add(-1)
	tw := newTokenWatch(s, Principal(r.Context()))
	timer := time.NewTimer(s.stream.PollWait)
	defer timer.Stop()
	for {
		if !tw.valid() {
			problem(w, http.StatusUnauthorized, "unauthorized", "the token was revoked")
			return
		}
		ch := s.deps.Stream.Changed()
		frames := s.read(cur)
		if len(frames) > 0 {
			msgs := make([]json.RawMessage, len(frames))
			for i, f := range frames {
				msgs[i] = f.data
			}
			writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "next": cur.after})
			return
		}
		select {
		case <-ch:
		case <-tw.changed:
		case <-timer.C:
			writeJSON(w, http.StatusOK, map[string]any{"messages": []json.RawMessage{}, "next": cur.after})
			return
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}
