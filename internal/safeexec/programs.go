package safeexec

import "sort"

// Programs returns the names of the programs a command line may run,
// sorted. Engines list them to models so that a model asks for what will
// run instead of learning the allowlist from refusals.
func Programs() []string {
	out := make([]string, 0, len(programs))
	for p := range programs {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
