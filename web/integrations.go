package web

import (
	"errors"
	"net/http"

	"github.com/telehub/telehub/devices"
)

// Integrations manages the credentials and ACLs of integration clients:
// MQTT clients such as Home Assistant that are not devices.
type Integrations interface {
	Create(in devices.Integration, by string) (devices.Integration, string, error)
	Get(id string) (devices.Integration, bool)
	List() []devices.Integration
	Delete(id string) error
}

type createIntegrationRequest struct {
	ID        string   `json:"id"`
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

type integrationWithSecret struct {
	Integration devices.Integration `json:"integration"`
	Secret      string              `json:"secret"`
}

func (s *Server) createIntegration(w http.ResponseWriter, r *http.Request) {
	var req createIntegrationRequest
	if !decodeBody(w, r, &req) {
		return
	}
	// Devices and integrations share the MQTT username space; the broker
	// tells them apart by their secrets, but people should not have to.
	if _, ok := s.deps.Registry.Get(req.ID); ok {
		problem(w, http.StatusConflict, "name taken by a device", "a device has the id "+req.ID+"; MQTT usernames of devices and integrations must differ")
		return
	}
	in, secret, err := s.deps.Integrations.Create(devices.Integration{ID: req.ID, Publish: req.Publish, Subscribe: req.Subscribe}, Who(r.Context()))
	var ve *devices.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(w, http.StatusBadRequest, "invalid integration", ve.Error())
	case errors.Is(err, devices.ErrIntegrationExists):
		problem(w, http.StatusConflict, "integration exists", "an integration with id "+req.ID+" exists; delete it first to change it")
	case err != nil:
		s.deps.Logger.Error("create integration", "integration", req.ID, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the integration could not be stored")
	default:
		s.deps.Logger.Info("integration created", "integration", in.ID, "by", in.CreatedBy)
		writeJSON(w, http.StatusCreated, integrationWithSecret{Integration: in, Secret: secret})
	}
}

func (s *Server) listIntegrations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"integrations": s.deps.Integrations.List()})
}

func (s *Server) getIntegration(w http.ResponseWriter, r *http.Request) {
	in, ok := s.deps.Integrations.Get(r.PathValue("id"))
	if !ok {
		problem(w, http.StatusNotFound, "integration not found", "no integration with id "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) deleteIntegration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.deps.Integrations.Delete(id)
	switch {
	case errors.Is(err, devices.ErrIntegrationNotFound):
		problem(w, http.StatusNotFound, "integration not found", "no integration with id "+id)
	case err != nil:
		s.deps.Logger.Error("delete integration", "integration", id, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the integration could not be deleted")
	default:
		s.deps.Logger.Info("integration deleted", "integration", id, "by", Who(r.Context()))
		w.WriteHeader(http.StatusNoContent)
	}
}
