package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/telehub/telehub/internal/notify"
)

// Webhooks manages the subscription webhooks.
type Webhooks interface {
	Create(ctx context.Context, s notify.Spec, by string) (notify.Webhook, string, error)
	List() []notify.Webhook
	Get(id string) (notify.Webhook, bool)
	Delete(id string) error
	Enable(id string) (notify.Webhook, error)
}

type webhookWithSecret struct {
	Webhook notify.Webhook `json:"webhook"`
	// Secret signs the deliveries; it is shown only now.
	Secret string `json:"secret"`
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req notify.Spec
	if !decodeBody(w, r, &req) {
		return
	}
	wh, secret, err := s.deps.Webhooks.Create(r.Context(), req, Who(r.Context()))
	var ve *notify.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid webhook", ve.Error())
	case err != nil:
		s.deps.Logger.Error("create webhook", "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the webhook could not be stored")
	default:
		w.Header().Set("Location", "/api/v1/webhooks/"+wh.ID)
		writeJSON(w, http.StatusCreated, webhookWithSecret{Webhook: wh, Secret: secret})
	}
}

func (s *Server) listWebhooks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": s.deps.Webhooks.List()})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	wh, ok := s.deps.Webhooks.Get(r.PathValue("id"))
	if !ok {
		problem(w, http.StatusNotFound, "webhook not found", "no webhook with id "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, wh)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	err := s.deps.Webhooks.Delete(r.PathValue("id"))
	switch {
	case errors.Is(err, notify.ErrNotFound):
		problem(w, http.StatusNotFound, "webhook not found", "no webhook with id "+r.PathValue("id"))
	case err != nil:
		s.deps.Logger.Error("delete webhook", "webhook_id", r.PathValue("id"), "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the webhook could not be deleted")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// enableWebhook enables a webhook that was disabled for failing.
func (s *Server) enableWebhook(w http.ResponseWriter, r *http.Request) {
	wh, err := s.deps.Webhooks.Enable(r.PathValue("id"))
	switch {
	case errors.Is(err, notify.ErrNotFound):
		problem(w, http.StatusNotFound, "webhook not found", "no webhook with id "+r.PathValue("id"))
	case err != nil:
		s.deps.Logger.Error("enable webhook", "webhook_id", r.PathValue("id"), "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the webhook could not be stored")
	default:
		writeJSON(w, http.StatusOK, wh)
	}
}
