package web

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
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
	return &cursor{after: after, filter: f}, true
}

// live upgrades to a WebSocket that streams the live stream as JSON text
// frames, one message each. The client may change its filter at any time by
// sending {"type":"subscribe","filter":{...}}.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	cur, ok := s.openCursor(w, r)
	if !ok {
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	ctx, cancel := context.WithCancel(s.ctx)
	filters := make(chan filterUpdate, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel()
		s.readPump(conn, filters)
	})
	s.writePump(ctx, conn, cur, filters)
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
func (s *Server) readPump(conn *websocket.Conn, filters chan filterUpdate) {
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
func (s *Server) writePump(ctx context.Context, conn *websocket.Conn, cur *cursor, filters chan filterUpdate) {
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	for {
		ch := s.deps.Stream.Changed()
		frames := s.read(cur)
		for _, f := range frames {
			if !write(conn, f.data) {
				return
			}
		}
		if len(frames) > 0 && s.deps.Stream.Last() > cur.after {
			continue
		}
		select {
		case <-ch:
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
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "hub stopping"))
			return
		}
	}
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
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	ping := time.NewTicker(pingPeriod / 2)
	defer ping.Stop()
	var buf []byte
	for {
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
		}
		if len(frames) > 0 && s.deps.Stream.Last() > cur.after {
			continue
		}
		select {
		case <-ch:
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
	timer := time.NewTimer(s.stream.PollWait)
	defer timer.Stop()
	for {
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
