// Package registry lists the catalog's entries, in the order `trace list`
// shows them.
package registry

import (
	"strings"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/exec"
)

var entries = []catalog.Entry{
	exec.Entry{},
}

// All returns every entry.
func All() []catalog.Entry { return entries }

// Infos returns every entry's Info.
func Infos() []catalog.Info {
	out := make([]catalog.Info, len(entries))
	for i, e := range entries {
		out[i] = e.Info()
	}
	return out
}

// Lookup finds an entry by its name (case-insensitive).
func Lookup(name string) (catalog.Entry, bool) {
	for _, e := range entries {
		if strings.EqualFold(e.Info().Name, name) {
			return e, true
		}
	}
	return nil, false
}

// Names lists the entry names.
func Names() []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Info().Name
	}
	return out
}
