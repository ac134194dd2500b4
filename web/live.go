package web

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/telehub/telehub/internal/live"
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
	// Access is by token, not by cookie, so a foreign page gains nothing.
	CheckOrigin: func(*http.Request) bool { return true },
}

// live upgrades to a WebSocket that streams every message of the live stream
// as a JSON text frame. With ?since=SEQ it first replays what followed SEQ; a
// client that fell further behind than the replay buffer gets a "gap" message
// saying how many it missed.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	after := s.deps.Stream.Last()
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid since", "since must be a sequence number")
			return
		}
		after = n
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel()
		s.readPump(conn)
	})
	s.writePump(ctx, conn, after)
	cancel()
	conn.Close()
	wg.Wait()
}

// readPump consumes client frames (control frames, for now) and notices when
// the client goes away.
func (s *Server) readPump(conn *websocket.Conn) {
	conn.SetReadLimit(64 << 10)
	conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
	}
}

// writePump owns every write to the connection: messages, pings, the close.
func (s *Server) writePump(ctx context.Context, conn *websocket.Conn, after uint64) {
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	buf := make([]live.Message, 0, readBatch)
	frame := make([]byte, 0, 512)
	for {
		ch := s.deps.Stream.Changed()
		msgs, missed := s.deps.Stream.Read(after, buf[:0], readBatch)
		if missed > 0 {
			frame = append(frame[:0], `{"kind":"gap","missed":`...)
			frame = strconv.AppendUint(frame, missed, 10)
			frame = append(frame, '}')
			if !write(conn, frame) {
				return
			}
		}
		for _, m := range msgs {
			frame = m.AppendFrame(frame[:0])
			if !write(conn, frame) {
				return
			}
			after = m.Seq
		}
		if len(msgs) == readBatch {
			continue
		}
		select {
		case <-ch:
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
