package bpftrace

import (
	"context"

	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the fallback as if it were an entry: its target is the
// script, and it honours no filters (a script filters itself).
var Info = catalog.Info{
	Name:        Name,
	Answers:     "what no catalog entry covers, with a bpftrace script",
	Reports:     "the script's printed output and maps (tables, histograms), capped",
	Keywords:    []string{"bpftrace"},
	Attach:      []string{"bpftrace"},
	NeedsTarget: true,
}

// Entry runs Params.Target as a bpftrace script.
type Entry struct{}

func (Entry) Info() catalog.Info { return Info }

// Check reports a missing bpftrace as a declared limitation.
func (Entry) Check(*catalog.Kernel) error {
	if _, err := Find(Options{}); err != nil {
		return &catalog.UnsupportedError{Entry: Name, Reason: err.Error()}
	}
	return nil
}

func (Entry) Start(ctx context.Context, _ *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	if err := p.Validate(Info); err != nil {
		return nil, err
	}
	params := p.Describe()
	delete(params, "target") // the summary names the script's probes
	t, err := Start(ctx, p.Target, Options{Params: params})
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return t, nil
}
