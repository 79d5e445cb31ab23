package cli

import (
	"io"
	"testing"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every flag docs/CONFIGURATION.md lists (config.Flags) exists: on every
// command, or, for --engine, where investigations start.
func TestConfigFlagsAreDefined(t *testing.T) {
	root := newApp(io.Discard, io.Discard).rootCommand()
	diagnose, _, err := root.Find([]string{"diagnose"})
	require.NoError(t, err)
	require.Equal(t, "diagnose", diagnose.Name())
	for _, f := range config.Flags {
		if f.Key == "ai.provider" {
			assert.NotNil(t, root.Flags().Lookup(f.Name), "--%s on the root command (--diagnose, the prompt)", f.Name)
			assert.NotNil(t, diagnose.Flags().Lookup(f.Name), "--%s on diagnose", f.Name)
			continue
		}
		assert.NotNil(t, root.PersistentFlags().Lookup(f.Name), "--%s (%s) on every command", f.Name, f.Key)
	}
}
