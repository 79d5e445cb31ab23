package catalog

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Links collects what a trace attached, so that every exit path detaches
// all of it.
type Links struct {
	links []link.Link
}

// Add keeps l when err is nil and wraps err with the attach point otherwise.
func (ls *Links) Add(what string, l link.Link, err error) error {
	if err != nil {
		return fmt.Errorf("attach %s: %w", what, err)
	}
	ls.links = append(ls.links, l)
	return nil
}

// Tracepoint attaches prog to the tracepoint group/name, mounting tracefs
// when needed.
func (ls *Links) Tracepoint(group, name string, prog *ebpf.Program) error {
	if _, err := EnsureTracefs(); err != nil {
		return fmt.Errorf("attach tracepoint %s/%s: %w", group, name, err)
	}
	l, err := link.Tracepoint(group, name, prog, nil)
	return ls.Add("tracepoint "+group+"/"+name, l, err)
}

// RawTracepoint attaches a raw_tp program.
func (ls *Links) RawTracepoint(name string, prog *ebpf.Program) error {
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: prog})
	return ls.Add("raw_tp "+name, l, err)
}

// Tracing attaches a tp_btf (or fentry/fexit) program to its BTF target.
func (ls *Links) Tracing(what string, prog *ebpf.Program) error {
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	return ls.Add(what, l, err)
}

// Kprobe attaches prog to the entry of kernel function fn.
func (ls *Links) Kprobe(fn string, prog *ebpf.Program) error {
	l, err := link.Kprobe(fn, prog, nil)
	return ls.Add("kprobe "+fn, l, err)
}

// Kretprobe attaches prog to the returns of kernel function fn.
func (ls *Links) Kretprobe(fn string, prog *ebpf.Program) error {
	l, err := link.Kretprobe(fn, prog, nil)
	return ls.Add("kretprobe "+fn, l, err)
}

// Uprobe attaches prog to the entry of symbol sym of ex, the executable or
// library at path (path names it in errors). A missing symbol stays
// recognisable: errors.Is(err, link.ErrNoSymbol).
func (ls *Links) Uprobe(ex *link.Executable, path, sym string, prog *ebpf.Program) error {
	l, err := ex.Uprobe(sym, prog, nil)
	return ls.Add("uprobe "+path+":"+sym, l, err)
}

// Uretprobe attaches prog to the returns of symbol sym of ex (see Uprobe).
func (ls *Links) Uretprobe(ex *link.Executable, path, sym string, prog *ebpf.Program) error {
	l, err := ex.Uretprobe(sym, prog, nil)
	return ls.Add("uretprobe "+path+":"+sym, l, err)
}

// Close detaches everything, concurrently: detaching a tracepoint takes
// tens of milliseconds, one after the other they add up.
func (ls *Links) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, len(ls.links))
	for i, l := range ls.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Close()
		}()
	}
	wg.Wait()
	ls.links = nil
	return errors.Join(errs...)
}

// CloseAll closes every closer in order, keeping all errors. Entries use it
// to release links, readers and objects in that order.
func CloseAll(cs ...io.Closer) error {
	var errs []error
	for _, c := range cs {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
