package catalog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Kernel enums whose numbering changes from one kernel to the next (drop
// reasons, RST reasons) are named from the running kernel's BTF, never
// from a table compiled in.

// Enum maps the values of one kernel enum to names, without their common
// prefix ("SKB_DROP_REASON_NO_SOCKET" -> "NO_SOCKET").
type Enum struct {
	names map[uint64]string
}

// EnumFromBTF reads enum name from spec and strips prefix from its value
// names.
func EnumFromBTF(spec *btf.Spec, name, prefix string) (Enum, error) {
	if spec == nil {
		return Enum{}, errors.New("no kernel BTF")
	}
	var e *btf.Enum
	if err := spec.TypeByName(name, &e); err != nil {
		return Enum{}, fmt.Errorf("enum %s in kernel BTF: %w", name, err)
	}
	m := Enum{names: make(map[uint64]string, len(e.Values))}
	for _, v := range e.Values {
		m.names[v.Value] = strings.TrimPrefix(v.Name, prefix)
	}
	return m, nil
}

// Name returns the name of v, or "N" when the enum does not know it.
func (e Enum) Name(v uint64) string {
	if n, ok := e.names[v]; ok {
		return n
	}
	return strconv.FormatUint(v, 10)
}

// Value returns the value named name (without the prefix).
func (e Enum) Value(name string) (uint64, bool) {
	for v, n := range e.names {
		if n == name {
			return v, true
		}
	}
	return 0, false
}

// NewEnum builds an Enum from a table (tests, kernels without BTF).
func NewEnum(names map[uint64]string) Enum { return Enum{names: names} }

// Enum reads the kernel enum name from the shared kernel BTF, its value
// names without prefix.
func (k *Kernel) Enum(name, prefix string) (Enum, error) {
	spec, err := k.BTF()
	if err != nil {
		return Enum{}, err
	}
	return EnumFromBTF(spec, name, prefix)
}
