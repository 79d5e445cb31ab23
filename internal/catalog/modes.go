package catalog

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Entries that can attach one question in several ways (tp_btf, raw_tp,
// classic tracepoint) compile one program per mode and choose at Start.
// These helpers keep that choice, the load of only the chosen programs and
// the attach the same in every such entry.

// TracepointMode picks tp_btf, then raw_tp: the first this kernel has for
// every raw tracepoint in names (their typed arguments, e.g. task
// pointers, are what entries prefer). When neither works, or names is
// empty (the entry cannot use the typed arguments here), it returns the
// classic tracepoint if classic, the check of that mode's own needs,
// passes: a kernel only has to have what the chosen mode uses.
func TracepointMode(k *Kernel, names []string, classic func() error) (Feature, error) {
	if len(names) > 0 {
	modes:
		for _, f := range []Feature{FeatureTpBTF, FeatureRawTracepoint} {
			for _, n := range names {
				if k.Has(Requirement{Feature: f, Name: n}) != nil {
					continue modes
				}
			}
			return f, nil
		}
	}
	if err := classic(); err != nil {
		if len(names) == 0 {
			return "", err
		}
		return "", fmt.Errorf("no tp_btf or raw_tp %s, and %w", strings.Join(names, ", "), err)
	}
	return FeatureTracepoint, nil
}

// ModeName is the attach mode as Info.Attach and Result.Attach spell it.
func ModeName(f Feature) string {
	if f == FeatureRawTracepoint {
		return "raw_tp"
	}
	return string(f)
}

// Attach attaches prog to the tracepoint group/name in mode (tp_btf,
// raw_tp or the classic tracepoint, as TracepointMode chose): tp_btf and
// raw_tp name only the tracepoint, the classic one its group too.
func (ls *Links) Attach(mode Feature, group, name string, prog *ebpf.Program) error {
	switch mode {
	case FeatureTpBTF:
		return ls.Tracing("tp_btf "+name, prog)
	case FeatureRawTracepoint:
		return ls.RawTracepoint(name, prog)
	default:
		return ls.Tracepoint(group, name, prog)
	}
}

// LoadPrograms loads the programs named progs and the maps that maps (a
// pointer to a struct of `ebpf:"..."` tagged fields, e.g. the generated
// <entry>Maps) names: only these, so a program of a mode the kernel lacks
// is never handed to the verifier. The programs come back in order.
func (k *Kernel) LoadPrograms(spec *ebpf.CollectionSpec, maps any, progs ...string) ([]*ebpf.Program, error) {
	fields := make([]reflect.StructField, 0, len(progs)+1)
	for i, name := range progs {
		fields = append(fields, reflect.StructField{
			Name: fmt.Sprintf("P%d", i),
			Type: reflect.TypeOf((*ebpf.Program)(nil)),
			Tag:  reflect.StructTag(`ebpf:"` + name + `"`),
		})
	}
	// An untagged pointer to a struct: LoadAndAssign fills its fields.
	fields = append(fields, reflect.StructField{Name: "Maps", Type: reflect.TypeOf(maps)})
	v := reflect.New(reflect.StructOf(fields)).Elem()
	v.Field(len(progs)).Set(reflect.ValueOf(maps))
	if err := k.Load(spec, v.Addr().Interface()); err != nil {
		return nil, err
	}
	out := make([]*ebpf.Program, len(progs))
	for i := range progs {
		out[i] = v.Field(i).Interface().(*ebpf.Program)
	}
	return out, nil
}

// RawTracepointArgs returns the arguments the kernel passes to the raw
// tracepoint name (without the leading void *), from its btf_trace_<name>
// typedef: entries read them to learn what a tracepoint carries on this
// kernel (they changed over time).
func (k *Kernel) RawTracepointArgs(name string) ([]btf.FuncParam, error) {
	spec, err := k.BTF()
	if err != nil {
		return nil, err
	}
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+name, &td); err != nil {
		return nil, err
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return nil, fmt.Errorf("btf_trace_%s is not a function pointer", name)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) == 0 {
		return nil, fmt.Errorf("btf_trace_%s is not a function pointer", name)
	}
	return proto.Params[1:], nil
}
