package runner

import (
	"errors"
	"fmt"

	"github.com/nannyagent/nannyagent/internal/catalog/bpftrace"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
)

// NewResolver offers every registered entry (also those that cannot run
// here: a request for them then fails with the entry's own reason instead
// of being mistaken for something else).
func NewResolver() *resolver.Resolver { return resolver.New(registry.Infos()) }

// JobFor turns a resolution into a job: a catalog entry, or the bpftrace
// fallback with the script as its target. A refused request is an error
// carrying the refusal.
func JobFor(r resolver.Resolution) (Job, error) {
	switch r.Kind() {
	case resolver.KindEntry:
		e, ok := registry.Lookup(r.Entry)
		if !ok {
			return Job{}, fmt.Errorf("resolved to %s, which is not registered", r.Entry)
		}
		return Job{Entry: e, Params: r.Params}, nil
	case resolver.KindFallback:
		p := r.Params
		p.Target = r.Fallback
		return Job{Entry: bpftrace.Entry{}, Params: p}, nil
	default:
		return Job{}, errors.New(r.Refused)
	}
}
