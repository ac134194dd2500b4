package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
)

// States gives and changes devices' desired and reported state.
type States interface {
	Get(deviceID string) (control.State, bool)
	SetDesired(deviceID string, desired json.RawMessage, ifVersion *uint64, by string) (control.State, error)
}

func stateETag(st control.State) string {
	return strconv.Quote(strconv.FormatUint(st.DesiredVersion, 10))
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	st, ok := s.deps.States.Get(r.PathValue("id"))
	if !ok {
		problem(w, http.StatusNotFound, "device not found", "no device with id "+r.PathValue("id"))
		return
	}
	w.Header().Set("ETag", stateETag(st))
	writeJSON(w, http.StatusOK, st)
}

// putState replaces the desired state with the body, a JSON object. An
// If-Match header with the desired version (as the ETag gives it) makes the
// change conditional: 412 if the desired state has changed since.
func (s *Server) putState(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var ifVersion *uint64
	if h := strings.TrimSpace(r.Header.Get("If-Match")); h != "" && h != "*" {
		v, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid If-Match", `If-Match: the desired version, e.g. "3"`)
			return
		}
		ifVersion = &v
	}
	body, ok := rawBody(w, r, 1<<20)
	if !ok {
		return
	}
	st, err := s.deps.States.SetDesired(id, body, ifVersion, Who(r.Context()))
	var ve *devices.ValidationError
	switch {
	case errors.Is(err, devices.ErrNotFound):
		problem(w, http.StatusNotFound, "device not found", "no device with id "+id)
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid desired state", ve.Error())
	case errors.Is(err, control.ErrVersionConflict):
		problem(w, http.StatusPreconditionFailed, "desired state changed", err.Error())
	case err != nil:
		s.deps.Logger.Error("set desired state", "device_id", id, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the desired state could not be stored")
	default:
		w.Header().Set("ETag", stateETag(st))
		writeJSON(w, http.StatusOK, st)
	}
}
