package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/ingest/rules"
)

func TestRulesYAMLIsAValidConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telehub.yaml")
	require.NoError(t, os.WriteFile(path, []byte(RulesYAML(1000, "rules", 1000)), 0o600))
	cfg, err := config.Load("serve", []string{"--config", path}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Len(t, cfg.Rules, 1000)
	require.NoError(t, rules.ValidateDeclared(cfg.Rules))
	kinds := map[string]int{}
	for _, s := range cfg.Rules {
		kinds[s.Condition.Kind]++
	}
	require.Equal(t, map[string]int{"threshold": 600, "rate": 200, "absence": 100, "offline": 100}, kinds)
	require.Empty(t, RulesYAML(0, "rules", 1000))
}

func TestRulesMarkdownComparesWithNoRules(t *testing.T) {
	rep := Report{Rules: []RulesRow{{Rules: 0, Cores: []float64{0.70, 0.72}}, {Rules: 100, Cores: []float64{0.73}}, {Rules: 1000, Cores: []float64{0.77, 0.77}}}}
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	rep.rulesMarkdown(w)
	rep.rulesTargets(w)
	out := b.String()
	require.Contains(t, out, "| 1,000 | 0.0 | 0.77, 0.77 | 0.770 | +8% |")
	require.Contains(t, out, "1,000 alert rules cost < 10% of ingest (hub CPU per reading) | +8% | **met** |")
}
