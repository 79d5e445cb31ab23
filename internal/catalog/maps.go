package catalog

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// EachEntry walks the map m, decoding every key and value into one reused
// K and V and passing them to fn (which must copy what it keeps). It is
// how entries read their in-kernel aggregates at Stop, and the error names
// the map. The walk of a hash map that changes meanwhile may see an entry
// twice or miss one; entries read after detaching, when nothing changes.
func EachEntry[K, V any](m *ebpf.Map, fn func(*K, *V)) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(&k, &v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	return nil
}
