package app

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// Issue #15: the bootstrap admin token, deleted through the API, stays
// deleted across restarts; the file's token is never registered again.
func TestBootstrapAdminTokenStaysRevoked(t *testing.T) {
	dir := t.TempDir()
	a := startHubIn(t, dir, nil)
	boot := a.AdminToken
	status, out := apiRequest(t, a, "POST", "/api/v1/tokens", "", `{"name":"second admin","role":"admin"}`)
	require.Equal(t, http.StatusCreated, status, out)
	second := out["secret"].(string)

	var me struct{ ID string }
	apiGet(t, a, "/api/v1/whoami", &me)
	a.AdminToken = second // apiRequest and apiGet use it from here on
	status, _ = apiRequest(t, a, "DELETE", "/api/v1/tokens/"+me.ID, "", "")
	require.Equal(t, http.StatusNoContent, status)
	a.Stop()

	b := startHubIn(t, dir, nil)
	require.Empty(t, b.AdminToken, "the file's token is revoked")
	require.True(t, strings.HasSuffix(b.DashboardURL(), "/"), b.DashboardURL())
	req, _ := http.NewRequest("GET", "http://"+b.HTTPAddr()+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+boot)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the revoked bootstrap token was not re-added")
	b.AdminToken = second
	var list struct {
		Tokens []struct{ Name string } `json:"tokens"`
	}
	apiGet(t, b, "/api/v1/tokens", &list)
	require.Len(t, list.Tokens, 1)
	require.Equal(t, "second admin", list.Tokens[0].Name)
}

// Issue #15: an admin token file that others may read is refused with an
// error that says what to do.
func TestAdminTokenFileModeIsChecked(t *testing.T) {
	dir := t.TempDir()
	a := startHubIn(t, dir, nil)
	a.Stop()
	path := filepath.Join(dir, "admin.token")
	require.NoError(t, os.Chmod(path, 0o644))

	cfg := config.Default()
	cfg.DataDir = dir
	cfg.MQTT.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0"
	_, err := Start(context.Background(), cfg, testenv.Logger(t))
	require.Error(t, err)
	require.Contains(t, err.Error(), "chmod 600")

	require.NoError(t, os.Chmod(path, 0o600))
	b := startHubIn(t, dir, nil)
	require.Equal(t, a.AdminToken, b.AdminToken)
}
