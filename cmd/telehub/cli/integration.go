package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

type integration struct {
	ID        string    `json:"id"`
	Publish   []string  `json:"publish"`
	Subscribe []string  `json:"subscribe"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	if s == "" {
		return fmt.Errorf("empty topic filter")
	}
	*l = append(*l, s)
	return nil
}

// Integration runs `telehub integration add|list|show|rm`: MQTT credentials
// for other clients of the broker (Home Assistant, Node-RED, a historian),
// each confined to the topic filters it is given.
func Integration(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: telehub integration add|list|show|rm [flags]", ErrUsage)
	}
	fs := flag.NewFlagSet("telehub integration "+args[0], flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf connFlags
	cf.register(fs, env)
	switch args[0] {
	case "add":
		var pub, sub listFlag
		fs.Var(&pub, "publish", "topic filter it may publish to (repeatable), e.g. 'site/#'")
		fs.Var(&sub, "subscribe", "topic filter it may subscribe to (repeatable), e.g. 'devices/+/telemetry'")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || len(pub)+len(sub) == 0 {
			return fmt.Errorf("%w: telehub integration add NAME --publish FILTER --subscribe FILTER (each repeatable, at least one)", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var out struct {
			Integration integration `json:"integration"`
			Secret      string      `json:"secret"`
		}
		body := map[string]any{"id": pos[0], "publish": []string(pub), "subscribe": []string(sub)}
		if err := c.Do(ctx, "POST", "/api/v1/integrations", body, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out)
		}
		fmt.Fprintf(env.Stdout, "created integration %s\nsecret: %s\n(shown once: connect with username %s and this secret as password)\n",
			out.Integration.ID, out.Secret, out.Integration.ID)
		return nil
	case "list":
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var out struct {
			Integrations []integration `json:"integrations"`
		}
		if err := c.Do(ctx, "GET", "/api/v1/integrations", nil, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out.Integrations)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPUBLISH\tSUBSCRIBE\tCREATED")
		for _, i := range out.Integrations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.ID, strings.Join(i.Publish, ","), strings.Join(i.Subscribe, ","), i.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "show", "rm":
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: telehub integration %s NAME", ErrUsage, args[0])
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		path := "/api/v1/integrations/" + url.PathEscape(pos[0])
		if args[0] == "rm" {
			if err := c.Do(ctx, "DELETE", path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "deleted integration %s (its sessions are closed)\n", pos[0])
			return nil
		}
		var i integration
		if err := c.Do(ctx, "GET", path, nil, &i); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, i)
		}
		fmt.Fprintf(env.Stdout, "NAME       %s\nPUBLISH    %s\nSUBSCRIBE  %s\nCREATED    %s\n", i.ID,
			strings.Join(i.Publish, ", "), strings.Join(i.Subscribe, ", "), i.CreatedAt.Format(time.RFC3339))
		return nil
	}
	return fmt.Errorf("%w: unknown integration command %q (add, list, show, rm)", ErrUsage, args[0])
}
