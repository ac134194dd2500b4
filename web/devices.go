package web

import (
	"errors"
	"net/http"
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
	ID     string            `json:"id"`
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels"`
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
	d, tok, err := s.deps.Registry.Create(devices.Device{ID: req.ID, Type: req.Type, Labels: req.Labels})
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

func (s *Server) listDevices(w http.ResponseWriter, _ *http.Request) {
	list := s.deps.Registry.List()
	out := make([]deviceView, len(list))
	for i, d := range list {
		out[i] = s.view(d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
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
