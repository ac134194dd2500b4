package web

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/telehub/telehub/devices"
)

type deviceView struct {
	devices.Device
	devices.Status
	LatestTS *time.Time     `json:"latest_ts,omitempty"`
	Latest   map[string]any `json:"latest,omitempty"`
}

func (s *Server) view(d devices.Device) deviceView {
	v := deviceView{Device: d, Status: s.deps.Presence.Get(d.ID)}
	if ts, fields := s.deps.Latest.Get(d.ID); fields != nil {
		v.LatestTS, v.Latest = &ts, fields
	}
	return v
}

type createDeviceRequest struct {
	ID       string            `json:"id"`
	Type     string            `json:"type"`
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	Metadata map[string]any    `json:"metadata"`
}

func (c createDeviceRequest) device() devices.Device {
	return devices.Device{ID: c.ID, Type: c.Type, Name: c.Name, Labels: c.Labels, Metadata: c.Metadata}
}

type deviceWithToken struct {
	Device devices.Device `json:"device"`
	Token  string         `json:"token"`
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	d, tok, err := s.deps.Registry.Create(req.device())
	var ve *devices.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid device", ve.Error())
	case errors.Is(err, devices.ErrExists):
		problem(w, http.StatusConflict, "device exists", "a device with id "+req.ID+" exists; rotate its token with POST /api/v1/devices/"+req.ID+"/token")
	case err != nil:
		s.deps.Logger.Error("create device", "device_id", req.ID, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the device could not be stored")
	default:
		writeJSON(w, http.StatusCreated, deviceWithToken{Device: d, Token: tok})
	}
}

// listDevices serves GET /api/v1/devices with filters: type, labels (a
// label selector), online (true/false), q (search in ID and name), and
// pagination by limit and after (the last ID of the previous page).
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	f := devices.Filter{Type: qv.Get("type"), Search: qv.Get("q")}
	var err error
	if f.Selector, err = devices.ParseSelector(qv.Get("labels")); err != nil {
		problem(w, http.StatusBadRequest, "invalid filter", err.Error())
		return
	}
	var online *bool
	if v := qv.Get("online"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid filter", "online must be true or false")
			return
		}
		online = &b
	}
	limit := 1000
	if v := qv.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 10000 {
			problem(w, http.StatusBadRequest, "invalid limit", "limit must be 1 to 10000")
			return
		}
	}
	after := qv.Get("after")
	out := []deviceView{}
	next := ""
	for _, d := range s.deps.Registry.List() {
		if d.ID <= after || !f.Match(d) {
			continue
		}
		v := s.view(d)
		if online != nil && v.Online != *online {
			continue
		}
		if len(out) == limit {
			next = out[len(out)-1].ID
			break
		}
		out = append(out, v)
	}
	resp := map[string]any{"devices": out}
	if next != "" {
		resp["next"] = next
	}
	writeJSON(w, http.StatusOK, resp)
}

type bulkResult struct {
	ID     string          `json:"id"`
	Status int             `json:"status"`
	Device *devices.Device `json:"device,omitempty"`
	Token  string          `json:"token,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// createDevices serves POST /api/v1/devices/bulk: up to 1,000 devices, each
// created or refused on its own; 200 with a result per device.
func (s *Server) createDevices(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Devices []createDeviceRequest `json:"devices"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if len(req.Devices) == 0 || len(req.Devices) > 1000 {
		problem(w, http.StatusBadRequest, "invalid bulk request", "send 1 to 1000 devices")
		return
	}
	out := make([]bulkResult, len(req.Devices))
	for i, c := range req.Devices {
		d, tok, err := s.deps.Registry.Create(c.device())
		var ve *devices.ValidationError
		switch {
		case err == nil:
			out[i] = bulkResult{ID: c.ID, Status: http.StatusCreated, Device: &d, Token: tok}
		case errors.As(err, &ve):
			out[i] = bulkResult{ID: c.ID, Status: http.StatusBadRequest, Error: ve.Error()}
		case errors.Is(err, devices.ErrExists):
			out[i] = bulkResult{ID: c.ID, Status: http.StatusConflict, Error: "device exists"}
		default:
			s.deps.Logger.Error("create device", "device_id", c.ID, "err", err)
			out[i] = bulkResult{ID: c.ID, Status: http.StatusInternalServerError, Error: "the device could not be stored"}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request) {
	var p devices.Patch
	if !decodeBody(w, r, &p) {
		return
	}
	d, err := s.deps.Registry.Update(r.PathValue("id"), p)
	var ve *devices.ValidationError
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "device not found", "no device with id "+r.PathValue("id"))
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid device", ve.Error())
	case err != nil:
		s.deps.Logger.Error("update device", "device_id", r.PathValue("id"), "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the device could not be stored")
	default:
		writeJSON(w, http.StatusOK, s.view(d))
	}
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	err := s.deps.Registry.Delete(r.PathValue("id"))
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "device not found", "no device with id "+r.PathValue("id"))
	case err != nil:
		s.deps.Logger.Error("delete device", "device_id", r.PathValue("id"), "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the device could not be deleted")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := s.deps.Registry.Get(r.PathValue("id"))
	if !ok {
		problem(w, http.StatusNotFound, "device not found", "no device with id "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, s.view(d))
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request) {
	d, tok, err := s.deps.Registry.RotateToken(r.PathValue("id"))
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "device not found", "no device with id "+r.PathValue("id"))
	case err != nil:
		s.deps.Logger.Error("rotate token", "device_id", r.PathValue("id"), "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the token could not be stored")
	default:
		writeJSON(w, http.StatusOK, deviceWithToken{Device: d, Token: tok})
	}
}
