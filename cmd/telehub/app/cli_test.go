package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/cli"
)

// The device and token commands against a running hub.
func TestCLIDeviceAndToken(t *testing.T) {
	a := startHub(t, nil)
	env := func(out *bytes.Buffer) cli.Env {
		return cli.Env{Stdout: out, Stderr: out, Getenv: func(k string) string {
			return map[string]string{"TELEHUB_URL": "http://" + a.HTTPAddr(), "TELEHUB_TOKEN": a.AdminToken}[k]
		}}
	}
	run := func(cmd func(context.Context, []string, cli.Env) error, args ...string) (string, error) {
		var out bytes.Buffer
		err := cmd(context.Background(), args, env(&out))
		return out.String(), err
	}

	out, err := run(cli.Device, "add", "cli-1", "--type", "thermostat", "--label", "room=kitchen", "--name", "Kitchen")
	require.NoError(t, err)
	require.Contains(t, out, "created cli-1 (thermostat)")
	require.Contains(t, out, "token: ")
	_, err = run(cli.Device, "add", "cli-2", "--type", "wearable", "--json")
	require.NoError(t, err)

	out, err = run(cli.Device, "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^ID\s+TYPE\s+ONLINE`, lines[0])
	require.Regexp(t, `^cli-1\s+thermostat\s+false\s+never\s+room=kitchen$`, lines[1])

	out, err = run(cli.Device, "list", "--type", "wearable", "--json")
	require.NoError(t, err)
	var devs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &devs))
	require.Len(t, devs, 1)
	require.Equal(t, "cli-2", devs[0]["id"])

	out, err = run(cli.Device, "show", "cli-1")
	require.NoError(t, err)
	require.Contains(t, out, "Kitchen")

	out, err = run(cli.Device, "token", "cli-1")
	require.NoError(t, err)
	require.Contains(t, out, "new token for cli-1")

	_, err = run(cli.Device, "rm", "cli-1")
	require.NoError(t, err)
	_, err = run(cli.Device, "show", "cli-1")
	var ae *cli.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 404, ae.Status)

	_, err = run(cli.Device, "add", "x")
	require.ErrorIs(t, err, cli.ErrUsage)

	out, err = run(cli.Token, "create", "--name", "wall screen", "--role", "viewer", "--json")
	require.NoError(t, err)
	var tok struct {
		Token struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tok))
	require.Equal(t, "viewer", tok.Token.Role)

	// The viewer token can list but not create; the token file works too.
	file := filepath.Join(t.TempDir(), "viewer.token")
	require.NoError(t, os.WriteFile(file, []byte(tok.Secret+"\n"), 0o600))
	var buf bytes.Buffer
	viewerEnv := cli.Env{Stdout: &buf, Stderr: &buf, Getenv: func(k string) string {
		return map[string]string{"TELEHUB_URL": "http://" + a.HTTPAddr()}[k]
	}}
	require.NoError(t, cli.Device(context.Background(), []string{"list", "--token-file", file}, viewerEnv))
	err = cli.Device(context.Background(), []string{"add", "v-1", "--type", "thermostat", "--token-file", file}, viewerEnv)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 403, ae.Status)

	out, err = run(cli.Token, "list")
	require.NoError(t, err)
	require.Contains(t, out, "wall screen")
	_, err = run(cli.Token, "rm", tok.Token.ID)
	require.NoError(t, err)
	err = cli.Device(context.Background(), []string{"list", "--token-file", file}, viewerEnv)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 401, ae.Status)
}

func TestCLIIntegration(t *testing.T) {
	a := startHub(t, nil)
	var out bytes.Buffer
	env := cli.Env{Stdout: &out, Stderr: &out, Getenv: func(k string) string {
		return map[string]string{"TELEHUB_URL": "http://" + a.HTTPAddr(), "TELEHUB_TOKEN": a.AdminToken}[k]
	}}
	ctx := context.Background()
	require.NoError(t, cli.Integration(ctx, []string{"add", "historian", "--subscribe", "devices/+/telemetry", "--json"}, env))
	var created struct {
		Secret string `json:"secret"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &created))
	require.NotEmpty(t, created.Secret)

	// The new credentials work on the broker: subscribe is granted.
	c, err := connect(t, a, "historian", created.Secret)
	require.NoError(t, err)
	tok := c.Subscribe("devices/+/telemetry", 1, nil)
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())

	out.Reset()
	require.NoError(t, cli.Integration(ctx, []string{"list"}, env))
	require.Regexp(t, `historian\s+devices/\+/telemetry`, out.String())
	out.Reset()
	require.NoError(t, cli.Integration(ctx, []string{"rm", "historian"}, env))
	_, err = connect(t, a, "historian", created.Secret)
	require.Error(t, err, "deleted credentials are refused")
	require.ErrorIs(t, cli.Integration(ctx, []string{"add", "x"}, env), cli.ErrUsage)
}
