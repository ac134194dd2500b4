package web

import (
	"errors"
	"net/http"
	"time"

	"github.com/telehub/telehub/ingest"
)

// history serves GET /api/v1/devices/{id}/telemetry.
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := s.deps.Registry.Get(id); !ok {
		problem(w, http.StatusNotFound, "device not found", "no device with id "+id)
		return
	}
	q, err := ingest.ParseHistoryQuery(id, r.URL.Query(), time.Now())
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid history query", err.Error())
		return
	}
	series, err := s.deps.History.History(r.Context(), q)
	var qe *ingest.QueryError
	switch {
	case errors.As(err, &qe):
		problem(w, http.StatusBadRequest, "invalid history query", qe.Error())
		return
	case err != nil:
		s.deps.Logger.Error("history query", "device_id", id, "err", err)
		problem(w, http.StatusBadGateway, "store unavailable", "the history could not be read from the store")
		return
	}
	resp := map[string]any{"device_id": id, "from": q.From.UTC(), "to": q.To.UTC(), "series": series}
	if q.Every > 0 {
		resp["every"], resp["agg"] = q.Every.String(), q.Agg
	}
	writeJSON(w, http.StatusOK, resp)
}
