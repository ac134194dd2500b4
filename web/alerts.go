package web

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/telehub/telehub/ingest/rules"
)

// Alerts reads and acknowledges alerts.
type Alerts interface {
	Alerts(f rules.Filter) []rules.Alert
	Alert(id string) (rules.Alert, bool)
	Ack(id, by, comment string) (rules.Alert, error)
}

// maxAlerts bounds one listing of alerts.
const maxAlerts = 1000

// listAlerts answers GET /api/v1/alerts?state=firing,pending&severity=
// critical&device=t1&rule=hot&limit=100, newest first.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := rules.Filter{Severity: q.Get("severity"), DeviceID: q.Get("device"), RuleID: q.Get("rule"), Limit: 500}
	if v := q.Get("state"); v != "" {
		for st := range strings.SplitSeq(v, ",") {
			if !slices.Contains([]string{rules.StatePending, rules.StateFiring, rules.StateResolved}, st) {
				problem(w, http.StatusBadRequest, "invalid state", "state "+strconv.Quote(st)+": use pending, firing or resolved, comma-separated")
				return
			}
			f.States = append(f.States, st)
		}
	}
	switch f.Severity {
	case "", rules.SeverityCritical, rules.SeverityWarning, rules.SeverityInfo:
	default:
		problem(w, http.StatusBadRequest, "invalid severity", "severity "+strconv.Quote(f.Severity)+": use critical, warning or info")
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAlerts {
			problem(w, http.StatusBadRequest, "invalid limit", "limit: a number from 1 to "+strconv.Itoa(maxAlerts))
			return
		}
		f.Limit = n
	}
	as := s.deps.Alerts.Alerts(f)
	if as == nil {
		as = []rules.Alert{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": as})
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	a, ok := s.deps.Alerts.Alert(r.PathValue("id"))
	if !ok {
		problem(w, http.StatusNotFound, "alert not found", "no alert with id "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

type ackRequest struct {
	Comment string `json:"comment"`
}

// ackAlert acknowledges a firing alert; the body ({"comment": "..."}) is
// optional.
func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	var req ackRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	a, err := s.deps.Alerts.Ack(id, Who(r.Context()), req.Comment)
	var ve *rules.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid acknowledgement", ve.Error())
	case errors.Is(err, rules.ErrAlertNotFound):
		problem(w, http.StatusNotFound, "alert not found", "no alert with id "+id)
	case errors.Is(err, rules.ErrNotFiring):
		problem(w, http.StatusConflict, "alert not firing", err.Error())
	case err != nil:
		s.deps.Logger.Error("ack alert", "alert_id", id, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the acknowledgement could not be recorded")
	default:
		writeJSON(w, http.StatusOK, a)
	}
}
