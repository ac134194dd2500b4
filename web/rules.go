package web

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/telehub/telehub/ingest/rules"
	"github.com/telehub/telehub/internal/auth"
)

// RuleReader reads alert rules.
type RuleReader interface {
	Rules() []rules.Rule
	Rule(id string) (rules.Rule, bool)
}

// RuleWriter changes alert rules; by names who does it.
type RuleWriter interface {
	CreateRule(s rules.Spec, by string) (rules.Rule, error)
	UpdateRule(id string, s rules.Spec, by string) (rules.Rule, error)
	DeleteRule(id string) error
}

// Rules is what the rule endpoints need: reading, changing and silencing.
type Rules interface {
	RuleReader
	RuleWriter
	SilenceRule(id string, until time.Time, by string) (rules.Rule, error)
}

// alertingRoutes registers the rule, alert and webhook endpoints.
func (s *Server) alertingRoutes() {
	if s.deps.Rules != nil {
		s.mux.Handle("GET /api/v1/rules", s.auth(auth.Viewer, s.listRules))
		s.mux.Handle("POST /api/v1/rules", s.auth(auth.Admin, s.createRule))
		s.mux.Handle("GET /api/v1/rules/{id}", s.auth(auth.Viewer, s.getRule))
		s.mux.Handle("PUT /api/v1/rules/{id}", s.auth(auth.Admin, s.updateRule))
		s.mux.Handle("DELETE /api/v1/rules/{id}", s.auth(auth.Admin, s.deleteRule))
		s.mux.Handle("POST /api/v1/rules/{id}/silence", s.auth(auth.Operator, s.silenceRule))
		s.mux.Handle("DELETE /api/v1/rules/{id}/silence", s.auth(auth.Operator, s.unsilenceRule))
	}
	if s.deps.Alerts != nil {
		s.mux.Handle("GET /api/v1/alerts", s.auth(auth.Viewer, s.listAlerts))
		s.mux.Handle("GET /api/v1/alerts/{id}", s.auth(auth.Viewer, s.getAlert))
		s.mux.Handle("POST /api/v1/alerts/{id}/ack", s.auth(auth.Operator, s.ackAlert))
	}
	if s.deps.Webhooks != nil {
		s.mux.Handle("GET /api/v1/webhooks", s.auth(auth.Admin, s.listWebhooks))
		s.mux.Handle("POST /api/v1/webhooks", s.auth(auth.Admin, s.createWebhook))
		s.mux.Handle("GET /api/v1/webhooks/{id}", s.auth(auth.Admin, s.getWebhook))
		s.mux.Handle("DELETE /api/v1/webhooks/{id}", s.auth(auth.Admin, s.deleteWebhook))
		s.mux.Handle("POST /api/v1/webhooks/{id}/enable", s.auth(auth.Admin, s.enableWebhook))
	}
}

// readRule reads a rule spec from the body, strictly, and answers 400 with
// what is wrong and where when it is not valid.
func (s *Server) readRule(w http.ResponseWriter, r *http.Request) (rules.Spec, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid rule", "the body could not be read: "+err.Error())
		return rules.Spec{}, false
	}
	spec, err := rules.ParseRule(b)
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid rule", err.Error())
		return rules.Spec{}, false
	}
	for i, id := range spec.Notify {
		if s.deps.Webhooks == nil {
			break
		}
		if _, ok := s.deps.Webhooks.Get(id); !ok {
			problem(w, http.StatusBadRequest, "invalid rule", fmt.Sprintf("notify[%d]: no webhook with id %s", i, id))
			return rules.Spec{}, false
		}
	}
	return spec, true
}

// ruleError answers the errors of rule changes.
func (s *Server) ruleError(w http.ResponseWriter, id string, err error) {
	var ve *rules.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid rule", ve.Error())
	case errors.Is(err, rules.ErrNotFound):
		problem(w, http.StatusNotFound, "rule not found", "no rule with id "+id)
	case errors.Is(err, rules.ErrExists):
		problem(w, http.StatusConflict, "rule exists", "a rule with id "+id+" exists; change it with PUT /api/v1/rules/"+id)
	case errors.Is(err, rules.ErrDeclared):
		problem(w, http.StatusConflict, "rule declared in the config file", "rule "+id+" is declared in the config file; change it there and restart")
	default:
		s.deps.Logger.Error("rule change failed", "rule_id", id, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the rule could not be stored")
	}
}

func (s *Server) listRules(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"rules": s.deps.Rules.Rules()})
}

func (s *Server) createRule(w http.ResponseWriter, r *http.Request) {
	spec, ok := s.readRule(w, r)
	if !ok {
		return
	}
	rule, err := s.deps.Rules.CreateRule(spec, Who(r.Context()))
	if err != nil {
		s.ruleError(w, spec.ID, err)
		return
	}
	w.Header().Set("Location", "/api/v1/rules/"+rule.ID)
	writeJSON(w, http.StatusCreated, rule)
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) {
	rule, ok := s.deps.Rules.Rule(r.PathValue("id"))
	if !ok {
		s.ruleError(w, r.PathValue("id"), rules.ErrNotFound)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func (s *Server) updateRule(w http.ResponseWriter, r *http.Request) {
	spec, ok := s.readRule(w, r)
	if !ok {
		return
	}
	rule, err := s.deps.Rules.UpdateRule(r.PathValue("id"), spec, Who(r.Context()))
	if err != nil {
		s.ruleError(w, r.PathValue("id"), err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request) {
	if err := s.deps.Rules.DeleteRule(r.PathValue("id")); err != nil {
		s.ruleError(w, r.PathValue("id"), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// silenceRequest silences a rule for a duration or until a time.
type silenceRequest struct {
	For   string    `json:"for"`
	Until time.Time `json:"until"`
}

func (s *Server) silenceRule(w http.ResponseWriter, r *http.Request) {
	var req silenceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	until := req.Until
	switch {
	case req.For != "" && !until.IsZero():
		problem(w, http.StatusBadRequest, "invalid silence", "give for or until, not both")
		return
	case req.For != "":
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 || d > 366*24*time.Hour {
			problem(w, http.StatusBadRequest, "invalid silence", "for: a positive duration up to 8784h, such as 30m or 12h")
			return
		}
		until = time.Now().Add(d)
	case until.IsZero() || !until.After(time.Now()):
		problem(w, http.StatusBadRequest, "invalid silence", "give for (such as 1h) or an until in the future")
		return
	}
	rule, err := s.deps.Rules.SilenceRule(r.PathValue("id"), until, Who(r.Context()))
	if err != nil {
		s.ruleError(w, r.PathValue("id"), err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func (s *Server) unsilenceRule(w http.ResponseWriter, r *http.Request) {
	rule, err := s.deps.Rules.SilenceRule(r.PathValue("id"), time.Time{}, Who(r.Context()))
	if err != nil {
		s.ruleError(w, r.PathValue("id"), err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}
