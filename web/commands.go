package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/internal/auth"
)

// Commands is what the API needs of the command service.
type Commands interface {
	Submit(req control.CommandRequest) (control.Command, bool, error)
	Get(deviceID, id string) (control.Command, bool)
	List(deviceID string, f control.CommandFilter) []control.Command
	Wait(ctx context.Context, deviceID, id string, after uint64) (control.Command, bool)
}

// Schemas manages the command schemas of device types.
type Schemas interface {
	Get(deviceType string) (control.CommandSchema, bool)
	Put(deviceType string, cs control.CommandSchema) error
	Delete(deviceType string) error
}

// maxCommandWait bounds a long poll on a command.
const maxCommandWait = 60 * time.Second

// controlRoutes registers the command, device type schema and state
// endpoints.
func (s *Server) controlRoutes() {
	if s.deps.Commands != nil {
		s.mux.Handle("POST /api/v1/devices/{id}/commands", s.auth(auth.Operator, s.sendCommand))
		s.mux.Handle("GET /api/v1/devices/{id}/commands", s.auth(auth.Viewer, s.listCommands))
		s.mux.Handle("GET /api/v1/devices/{id}/commands/{cid}", s.auth(auth.Viewer, s.getCommand))
	}
	if s.deps.Schemas != nil {
		s.mux.Handle("GET /api/v1/device-types/{type}/commands", s.auth(auth.Viewer, s.getSchema))
		s.mux.Handle("PUT /api/v1/device-types/{type}/commands", s.auth(auth.Admin, s.putSchema))
		s.mux.Handle("DELETE /api/v1/device-types/{type}/commands", s.auth(auth.Admin, s.deleteSchema))
	}
	if s.deps.States != nil {
		s.mux.Handle("GET /api/v1/devices/{id}/state", s.auth(auth.Viewer, s.getState))
		s.mux.Handle("PUT /api/v1/devices/{id}/state", s.auth(auth.Operator, s.putState))
	}
}

// timeoutJSON is a duration given as a Go duration string ("30s", "5m")
// or a number of seconds.
type timeoutJSON time.Duration

func (d *timeoutJSON) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		*d = timeoutJSON(secs * float64(time.Second))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`timeout: a duration such as "30s" or a number of seconds`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("timeout %q: a duration such as 30s or 5m", s)
	}
	*d = timeoutJSON(v)
	return nil
}

type commandRequest struct {
	Name           string          `json:"name"`
	Params         json.RawMessage `json:"params"`
	Timeout        timeoutJSON     `json:"timeout"`
	ExpiresAt      *time.Time      `json:"expires_at"`
	IdempotencyKey string          `json:"idempotency_key"`
}

func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req commandRequest
	if !decodeBody(w, r, &req) {
		return
	}
	key := req.IdempotencyKey
	if h := r.Header.Get("Idempotency-Key"); h != "" {
		if key != "" && key != h {
			problem(w, http.StatusBadRequest, "invalid command", "the Idempotency-Key header and idempotency_key differ")
			return
		}
		key = h
	}
	cr := control.CommandRequest{DeviceID: id, Name: req.Name, Params: req.Params, Timeout: time.Duration(req.Timeout),
		IdempotencyKey: key, By: Who(r.Context())}
	if req.ExpiresAt != nil {
		cr.ExpiresAt = *req.ExpiresAt
	}
	cmd, replayed, err := s.deps.Commands.Submit(cr)
	var ve *devices.ValidationError
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "device not found", "no device with id "+id)
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid command", ve.Error())
	case errors.Is(err, control.ErrIdempotencyConflict):
		problem(w, http.StatusUnprocessableEntity, "idempotency key reused",
			"idempotency key "+strconv.Quote(key)+" was used for a different command to this device")
	case errors.Is(err, control.ErrQueueFull):
		w.Header().Set("Retry-After", "30")
		problem(w, http.StatusTooManyRequests, "command queue full",
			"device "+id+" has too many pending commands; wait for them to finish or expire")
	case err != nil:
		s.deps.Logger.Error("submit command", "device_id", id, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the command could not be stored")
	default:
		w.Header().Set("Location", "/api/v1/devices/"+url.PathEscape(id)+"/commands/"+cmd.ID)
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeJSON(w, http.StatusAccepted, cmd)
	}
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := s.deps.Registry.Get(id); !ok {
		problem(w, http.StatusNotFound, "device not found", "no device with id "+id)
		return
	}
	q := r.URL.Query()
	f := control.CommandFilter{Name: q.Get("name"), Limit: 100}
	if v := q.Get("status"); v != "" {
		for _, part := range strings.Split(v, ",") {
			st, err := control.ParseCommandStatus(strings.TrimSpace(part))
			if err != nil {
				problem(w, http.StatusBadRequest, "invalid query", err.Error())
				return
			}
			f.Statuses = append(f.Statuses, st)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problem(w, http.StatusBadRequest, "invalid query", "limit: a whole number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"commands": s.deps.Commands.List(id, f)})
}

// getCommand returns a command. With wait (a duration up to 60s) it answers
// when the command's revision exceeds after (default: the current one), the
// command is final, or the wait is over: a long poll for status changes.
func (s *Server) getCommand(w http.ResponseWriter, r *http.Request) {
	id, cid := r.PathValue("id"), r.PathValue("cid")
	cmd, ok := s.deps.Commands.Get(id, cid)
	if !ok {
		problem(w, http.StatusNotFound, "command not found", "no command "+cid+" for device "+id)
		return
	}
	q := r.URL.Query()
	if v := q.Get("wait"); v != "" {
		wait, err := time.ParseDuration(v)
		if err != nil || wait < 0 || wait > maxCommandWait {
			problem(w, http.StatusBadRequest, "invalid query", "wait: a duration up to 60s, e.g. 30s")
			return
		}
		after := cmd.Revision
		if a := q.Get("after"); a != "" {
			if after, err = strconv.ParseUint(a, 10, 64); err != nil {
				problem(w, http.StatusBadRequest, "invalid query", "after: a revision number")
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		ctx, stop := mergeDone(ctx, s.ctx)
		defer stop()
		if cmd, ok = s.deps.Commands.Wait(ctx, id, cid, after); !ok {
			problem(w, http.StatusNotFound, "command not found", "no command "+cid+" for device "+id)
			return
		}
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(cmd.Revision, 10)))
	writeJSON(w, http.StatusOK, cmd)
}

// mergeDone returns a context that also ends when other does (the hub
// stopping ends long polls).
func mergeDone(ctx, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(other, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Server) getSchema(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("type")
	cs, ok := s.deps.Schemas.Get(t)
	if !ok {
		problem(w, http.StatusNotFound, "no command schema", "device type "+t+" declares no command schema; its commands are not validated")
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

func (s *Server) putSchema(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("type")
	var cs control.CommandSchema
	if !decodeBody(w, r, &cs) {
		return
	}
	err := s.deps.Schemas.Put(t, cs)
	var ve *devices.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid command schema", ve.Error())
	case err != nil:
		s.deps.Logger.Error("store command schema", "device_type", t, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the schema could not be stored")
	default:
		writeJSON(w, http.StatusOK, cs)
	}
}

func (s *Server) deleteSchema(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("type")
	err := s.deps.Schemas.Delete(t)
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "no command schema", "device type "+t+" declares no command schema")
	case err != nil:
		s.deps.Logger.Error("delete command schema", "device_type", t, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the schema could not be deleted")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// rawBody reads a request body of at most max bytes.
func rawBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max)); err != nil {
		problem(w, http.StatusRequestEntityTooLarge, "body too large", err.Error())
		return nil, false
	}
	return buf.Bytes(), true
}
