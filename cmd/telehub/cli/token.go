package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"
)

type apiToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// Token runs `telehub token create|list|rm`.
func Token(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: telehub token create|list|rm [flags]", ErrUsage)
	}
	fs := flag.NewFlagSet("telehub token "+args[0], flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf connFlags
	cf.register(fs, env)
	switch args[0] {
	case "create":
		name := fs.String("name", "", "what the token is for (required)")
		role := fs.String("role", "viewer", "viewer, operator or admin")
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		if *name == "" {
			return fmt.Errorf("%w: telehub token create --name NAME --role viewer|operator|admin", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var out struct {
			Token  apiToken `json:"token"`
			Secret string   `json:"secret"`
		}
		if err := c.Do(ctx, "POST", "/api/v1/tokens", map[string]string{"name": *name, "role": *role}, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out)
		}
		fmt.Fprintf(env.Stdout, "created %s token %s (%s)\nsecret: %s\n(shown once)\n", out.Token.Role, out.Token.ID, out.Token.Name, out.Secret)
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
			Tokens []apiToken `json:"tokens"`
		}
		if err := c.Do(ctx, "GET", "/api/v1/tokens", nil, &out); err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, out.Tokens)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED")
		for _, t := range out.Tokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Name, t.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "rm":
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: telehub token rm ID", ErrUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.Do(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "revoked %s\n", pos[0])
		return nil
	}
	return fmt.Errorf("%w: unknown token command %q (create, list, rm)", ErrUsage, args[0])
}
