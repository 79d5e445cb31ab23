package patch

import (
	"bytes"
	"encoding/json"
	"io"
)

// Summary is the JSON object the patch scripts print among their text
// (§2.9): how many updates there are, which, and whether it was a dry
// run.
type Summary struct {
	UpdatesAvailable int             `json:"updates_available"`
	Packages         []PackageUpdate `json:"packages"`
	// DryRun is absent from the "no updates" line of some scripts.
	DryRun *bool `json:"dry_run,omitempty"`
}

// PackageUpdate is one package of a Summary.
type PackageUpdate struct {
	Package        string `json:"package"`
	CurrentVersion string `json:"current_version"`
	NewVersion     string `json:"new_version"`
}

// Bounds of the search: the output is up to 10 MB of a script's text.
const (
	summaryKey = `"updates_available"`
	// maxKeyHits is how many occurrences of the key are tried, last
	// first.
	maxKeyHits = 16
	// maxLookBack is how far before the key its object may start (the
	// packages may come first).
	maxLookBack = 1 << 20
	// maxObject bounds one candidate object.
	maxObject = 2 << 20
	// maxWork bounds the bytes all decoding attempts may read, so that
	// output full of braces costs linear time, not quadratic.
	maxWork = 16 << 20
)

// ParseSummary finds the script's summary in its output: the last JSON
// object with a top-level "updates_available" whose fields have the
// summary's types and whose count is not negative. ok is false when
// there is none.
func ParseSummary(out []byte) (s *Summary, ok bool) {
	work := 0
	end := len(out)
	for hit := 0; hit < maxKeyHits; hit++ {
		k := bytes.LastIndex(out[:end], []byte(summaryKey))
		if k < 0 {
			return nil, false
		}
		end = k
		if s := objectAround(out, k, &work); s != nil {
			return s, true
		}
		if work >= maxWork {
			return nil, false
		}
	}
	return nil, false
}

// objectAround tries the '{' before the key at k, nearest first, for an
// object that holds the key at its top level.
func objectAround(out []byte, k int, work *int) *Summary {
	floor := max(0, k-maxLookBack)
	for i := k - 1; i >= floor; i-- {
		if out[i] != '{' {
			continue
		}
		if *work >= maxWork {
			return nil
		}
		if !opensObject(out[i+1 : min(len(out), i+64)]) {
			continue
		}
		limit := min(len(out), i+maxObject)
		r := &countingReader{data: out[i:limit]}
		dec := json.NewDecoder(r)
		var fields map[string]json.RawMessage
		err := dec.Decode(&fields)
		*work += r.read
		if err != nil {
			continue
		}
		n := int(dec.InputOffset())
		if i+n <= k {
			// An object that ends before the key (a package entry of a
			// summary that lists them first): its start is further back.
			continue
		}
		if _, has := fields["updates_available"]; !has {
			// The key sits deeper in this object; not a summary.
			return nil
		}
		var s Summary
		if json.Unmarshal(out[i:i+n], &s) != nil || s.UpdatesAvailable < 0 {
			return nil
		}
		return &s
	}
	return nil
}

// opensObject: after a '{', a JSON object goes on with a key or ends
// (whitespace first); the braces of shell text ("${VAR}") do not.
func opensObject(rest []byte) bool {
	for _, c := range rest {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"', '}':
			return true
		}
		return false
	}
	return len(rest) == 0
}

// countingReader counts what the decoder read, which is what its
// attempt cost.
type countingReader struct {
	data []byte
	read int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.read:])
	r.read += n
	return n, nil
}
