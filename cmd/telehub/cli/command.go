package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// command is a command as the API returns it.
type command struct {
	ID          string          `json:"id"`
	DeviceID    string          `json:"device_id"`
	Name        string          `json:"name"`
	Params      json.RawMessage `json:"params"`
	Status      string          `json:"status"`
	Revision    uint64          `json:"revision"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	Attempts    int             `json:"attempts"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	ResultVia   string          `json:"result_via,omitempty"`
	History     []transition    `json:"history"`
	CompletedAt *time.Time      `json:"completed_at,omitempty"`
}

type transition struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

func (c command) final() bool {
	return c.Status == "succeeded" || c.Status == "failed" || c.Status == "expired"
}

// ErrCommandFailed is returned by `command send --wait` and `command show
// --wait` when the command ends failed or expired.
var ErrCommandFailed = errors.New("command did not succeed")

// longPoll is how long one wait request may last on the hub.
const longPoll = 25 * time.Second

// Command runs `telehub command send|show|list`.
func Command(ctx context.Context, args []string, env Env) error {
	const usage = "telehub command send DEVICE NAME [key=value]... [--wait] [--timeout 30s] [--idempotency-key K] | show DEVICE ID [--wait] | list DEVICE [--status S] [--limit N]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", ErrUsage, usage)
	}
	fs := flag.NewFlagSet("telehub command "+args[0], flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf connFlags
	cf.register(fs, env)
	switch args[0] {
	case "send":
		wait := fs.Bool("wait", false, "print the status as it changes until the command is final; exit 1 unless it succeeded")
		timeout := fs.Duration("timeout", 0, "command lifetime (default: the hub's, 1h)")
		key := fs.String("idempotency-key", "", "the hub never sends two commands with the same key to a device")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) < 2 {
			return fmt.Errorf("%w: %s", ErrUsage, usage)
		}
		params, err := parseParams(pos[2:])
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		body := map[string]any{"name": pos[1], "params": params}
		if *timeout > 0 {
			body["timeout"] = timeout.String()
		}
		if *key != "" {
			body["idempotency_key"] = *key
		}
		var cmd command
		if err := c.Do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(pos[0])+"/commands", body, &cmd); err != nil {
			return err
		}
		if !cf.json {
			fmt.Fprintf(env.Stdout, "command %s: %s to %s, expires %s\n", cmd.ID, cmd.Name, cmd.DeviceID,
				cmd.ExpiresAt.Local().Format(time.RFC3339))
		}
		return follow(ctx, c, cmd, *wait, cf.json, env.Stdout)
	case "show":
		wait := fs.Bool("wait", false, "print the status as it changes until the command is final")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return fmt.Errorf("%w: telehub command show DEVICE ID [--wait]", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var cmd command
		if err := c.Do(ctx, "GET", commandPath(pos[0], pos[1]), nil, &cmd); err != nil {
			return err
		}
		if !cf.json {
			fmt.Fprintf(env.Stdout, "command %s: %s to %s by %s, params %s, attempts %d\n",
				cmd.ID, cmd.Name, cmd.DeviceID, cmd.CreatedBy, cmd.Params, cmd.Attempts)
		}
		return follow(ctx, c, cmd, *wait, cf.json, env.Stdout)
	case "list":
		status := fs.String("status", "", "only these statuses, comma-separated")
		limit := fs.Int("limit", 20, "at most this many, newest first")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: telehub command list DEVICE [--status S] [--limit N]", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if *status != "" {
			q.Set("status", *status)
		}
		var out struct {
			Commands []command `json:"commands"`
		}
		if err := c.Do(ctx, "GET", "/api/v1/devices/"+url.PathEscape(pos[0])+"/commands?"+q.Encode(), nil, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out.Commands)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tCREATED\tBY")
		for _, cmd := range out.Commands {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cmd.ID, cmd.Name, cmd.Status,
				cmd.CreatedAt.Local().Format("2006-01-02 15:04:05"), cmd.CreatedBy)
		}
		return tw.Flush()
	default:
		return fmt.Errorf("%w: unknown subcommand %q: %s", ErrUsage, args[0], usage)
	}
}

func commandPath(deviceID, id string) string {
	return "/api/v1/devices/" + url.PathEscape(deviceID) + "/commands/" + url.PathEscape(id)
}

// parseParams reads key=value arguments. A value that is JSON (a number,
// true, false, null, an object, an array or a quoted string) is taken as
// such; anything else is a string: value=22 is a number, mode=heat a string,
// name='"22"' the string "22".
func parseParams(args []string) (map[string]any, error) {
	params := map[string]any{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("parameter %q: use key=value", a)
		}
		if _, dup := params[k]; dup {
			return nil, fmt.Errorf("parameter %q given twice", k)
		}
		var j any
		if json.Valid([]byte(v)) && json.Unmarshal([]byte(v), &j) == nil {
			params[k] = json.RawMessage(v)
		} else {
			params[k] = v
		}
	}
	return params, nil
}

// follow prints the command's history so far and, with wait, each change
// until the command is final (long polling the hub). It returns
// ErrCommandFailed when a waited-for command fails or expires.
func follow(ctx context.Context, c *Client, cmd command, wait, asJSON bool, out io.Writer) error {
	var last *transition // the last transition printed
	show := func(cmd command) {
		if asJSON {
			return
		}
		from := 0
		if last != nil { // print what follows it (the hub trims long histories)
			for i := len(cmd.History) - 1; i >= 0; i-- {
				if h := cmd.History[i]; h.Status == last.Status && h.At.Equal(last.At) && h.Detail == last.Detail {
					from = i + 1
					break
				}
			}
		}
		for _, h := range cmd.History[from:] {
			line := fmt.Sprintf("%s  %-9s", h.At.Local().Format("15:04:05.000"), h.Status)
			if h.Detail != "" {
				line += "  " + h.Detail
			}
			fmt.Fprintln(out, strings.TrimRight(line, " "))
		}
		if n := len(cmd.History); n > 0 {
			last = &cmd.History[n-1]
		}
	}
	show(cmd)
	for wait && !cmd.final() {
		path := commandPath(cmd.DeviceID, cmd.ID) + "?wait=" + longPoll.String() + "&after=" + strconv.FormatUint(cmd.Revision, 10)
		var next command
		if err := c.Do(ctx, "GET", path, nil, &next); err != nil {
			return err
		}
		if next.Revision < cmd.Revision { // never expected; do not go back
			continue
		}
		cmd = next
		show(cmd)
	}
	if asJSON {
		return printJSON(out, cmd)
	}
	switch cmd.Status {
	case "succeeded":
		if len(cmd.Result) > 0 {
			fmt.Fprintf(out, "result: %s\n", cmd.Result)
		}
	case "failed":
		fmt.Fprintf(out, "error: %s\n", cmd.Error)
	}
	if wait && cmd.Status != "succeeded" {
		return fmt.Errorf("%w: %s is %s", ErrCommandFailed, cmd.ID, cmd.Status)
	}
	return nil
}
