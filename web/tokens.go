package web

import (
	"errors"
	"net/http"

	"github.com/telehub/telehub/internal/auth"
)

type createTokenRequest struct {
	Name string    `json:"name"`
	Role auth.Role `json:"role"`
}

type tokenWithSecret struct {
	Token  auth.Token `json:"token"`
	Secret string     `json:"secret"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req createTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	t, secret, err := s.deps.Tokens.Create(req.Name, req.Role, Who(r.Context()))
	if err != nil {
		problem(w, http.StatusBadRequest, "invalid token", err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, tokenWithSecret{Token: t, Secret: secret})
}

// whoami answers with the token the request came with (its role tells the
// dashboard which controls to offer).
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Principal(r.Context()))
}

func (s *Server) listTokens(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"tokens": s.deps.Tokens.List()})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	err := s.deps.Tokens.Delete(r.PathValue("id"))
	switch {
	case errors.Is(err, auth.ErrNotFound):
		problem(w, http.StatusNotFound, "token not found", "no token with id "+r.PathValue("id"))
	case err != nil:
		s.deps.Logger.Error("delete token", "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "the token could not be deleted")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
