// Package registry lists the catalog's entries, in the order `trace list`
// shows them.
package registry

import (
	"strings"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/biolatency"
	"github.com/nannyagent/nannyagent/internal/catalog/dns"
	"github.com/nannyagent/nannyagent/internal/catalog/drops"
	"github.com/nannyagent/nannyagent/internal/catalog/exec"
	"github.com/nannyagent/nannyagent/internal/catalog/exit"
	"github.com/nannyagent/nannyagent/internal/catalog/fileio"
	"github.com/nannyagent/nannyagent/internal/catalog/kfunc"
	"github.com/nannyagent/nannyagent/internal/catalog/oomkill"
	"github.com/nannyagent/nannyagent/internal/catalog/open"
	"github.com/nannyagent/nannyagent/internal/catalog/pagefaults"
	"github.com/nannyagent/nannyagent/internal/catalog/profile"
	"github.com/nannyagent/nannyagent/internal/catalog/reclaim"
	"github.com/nannyagent/nannyagent/internal/catalog/runqlat"
	"github.com/nannyagent/nannyagent/internal/catalog/signals"
	"github.com/nannyagent/nannyagent/internal/catalog/syscalls"
	"github.com/nannyagent/nannyagent/internal/catalog/tcpconnect"
	"github.com/nannyagent/nannyagent/internal/catalog/tcplife"
	"github.com/nannyagent/nannyagent/internal/catalog/tcpreset"
	"github.com/nannyagent/nannyagent/internal/catalog/tcpretrans"
	"github.com/nannyagent/nannyagent/internal/catalog/tracepoint"
)

var entries = []catalog.Entry{
	exec.Entry{},
	exit.Entry{},
	open.Entry{},
	syscalls.Entry{},
	fileio.Entry{},
	tcpconnect.Entry{},
	tcplife.Entry{},
	tcpretrans.Entry{},
	tcpreset.Entry{},
	drops.Entry{},
	biolatency.Entry{},
	runqlat.Entry{},
	oomkill.Entry{},
	reclaim.Entry{},
	signals.Entry{},
	profile.Entry{},
	dns.Entry{},
	pagefaults.Entry{},
	tracepoint.Entry{},
	kfunc.Entry{},
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
