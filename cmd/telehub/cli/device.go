package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

type device struct {
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Name       string            `json:"name,omitempty"`
	Labels     map[string]string `json:"labels"`
	Online     bool              `json:"online"`
	LastSeen   *time.Time        `json:"last_seen,omitempty"`
	Latest     map[string]any    `json:"latest,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	Connection *struct {
		ClientID string `json:"client_id"`
		Remote   string `json:"remote"`
		Protocol string `json:"protocol"`
	} `json:"connection,omitempty"`
}

type labelFlag map[string]string

func (l labelFlag) String() string { return "" }

func (l labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: use key=value", s)
	}
	l[k] = v
	return nil
}

// filterSwitch is a filter that is either absent or true or false. Like
// the flag package's bools it is a switch: --online alone means true,
// --online=false false.
type filterSwitch struct{ v string }

func (f *filterSwitch) String() string {
	if f == nil {
		return ""
	}
	return f.v
}

func (f *filterSwitch) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	f.v = strconv.FormatBool(b)
	return nil
}

// IsBoolFlag tells the flag package that the flag needs no value.
func (f *filterSwitch) IsBoolFlag() bool { return true }

// Device runs `telehub device add|list|show|rm|token`.
func Device(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: telehub device add|list|show|rm|token [flags]", ErrUsage)
	}
	fs := flag.NewFlagSet("telehub device "+args[0], flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf connFlags
	cf.register(fs, env)
	switch args[0] {
	case "add":
		typ := fs.String("type", "", "device type, e.g. thermostat (required)")
		name := fs.String("name", "", "display name")
		labels := labelFlag{}
		fs.Var(labels, "label", "label key=value (repeatable)")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || *typ == "" {
			return fmt.Errorf("%w: telehub device add ID --type TYPE [--name N] [--label k=v (repeatable)]", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var out struct {
			Device device `json:"device"`
			Token  string `json:"token"`
		}
		body := map[string]any{"id": pos[0], "type": *typ, "name": *name, "labels": map[string]string(labels)}
		if err := c.Do(ctx, "POST", "/api/v1/devices", body, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out)
		}
		fmt.Fprintf(env.Stdout, "created %s (%s)\ntoken: %s\n(shown once: the device connects with username %s and this token as password)\n",
			out.Device.ID, out.Device.Type, out.Token, out.Device.ID)
		return nil
	case "list":
		typ := fs.String("type", "", "only this type")
		sel := fs.String("labels", "", "label selector, e.g. room=kitchen,floor!=2")
		var online filterSwitch
		fs.Var(&online, "online", "only online devices (--online=false: only offline ones)")
		q := fs.String("q", "", "search in ID and name")
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		v := url.Values{}
		for k, val := range map[string]string{"type": *typ, "labels": *sel, "online": online.v, "q": *q} {
			if val != "" {
				v.Set(k, val)
			}
		}
		var all []device
		after := ""
		for {
			if after != "" {
				v.Set("after", after)
			}
			var page struct {
				Devices []device `json:"devices"`
				Next    string   `json:"next"`
			}
			if err := c.Do(ctx, "GET", "/api/v1/devices?"+v.Encode(), nil, &page); err != nil {
				return err
			}
			all = append(all, page.Devices...)
			if after = page.Next; after == "" {
				break
			}
		}
		if cf.json {
			return printJSON(env.Stdout, all)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTYPE\tONLINE\tLAST SEEN\tLABELS")
		for _, d := range all {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", d.ID, d.Type, d.Online, ago(d.LastSeen), labelsText(d.Labels))
		}
		return tw.Flush()
	case "show", "rm", "token":
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: telehub device %s ID", ErrUsage, args[0])
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		path := "/api/v1/devices/" + url.PathEscape(pos[0])
		switch args[0] {
		case "rm":
			if err := c.Do(ctx, "DELETE", path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "deleted %s\n", pos[0])
			return nil
		case "token":
			var out struct {
				Device device `json:"device"`
				Token  string `json:"token"`
			}
			if err := c.Do(ctx, "POST", path+"/token", nil, &out); err != nil {
				return err
			}
			if cf.json {
				return printJSON(env.Stdout, out)
			}
			fmt.Fprintf(env.Stdout, "new token for %s: %s\n(shown once; the old token no longer works)\n", out.Device.ID, out.Token)
			return nil
		}
		var d device
		if err := c.Do(ctx, "GET", path, nil, &d); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, d)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "ID\t%s\nTYPE\t%s\nNAME\t%s\nLABELS\t%s\nONLINE\t%v\nLAST SEEN\t%s\n", d.ID, d.Type, d.Name, labelsText(d.Labels), d.Online, ago(d.LastSeen))
		if d.Connection != nil {
			fmt.Fprintf(tw, "CONNECTION\t%s from %s, MQTT %s\n", d.Connection.ClientID, d.Connection.Remote, d.Connection.Protocol)
		}
		keys := make([]string, 0, len(d.Latest))
		for k := range d.Latest {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%v\n", k, d.Latest[k])
		}
		return tw.Flush()
	}
	return fmt.Errorf("%w: unknown device command %q (add, list, show, rm, token)", ErrUsage, args[0])
}

func labelsText(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func ago(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return time.Since(*t).Round(time.Second).String() + " ago"
}
