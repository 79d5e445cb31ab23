package profile

import (
	"bufio"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// sym is one function: [Addr, Addr+Size) (Size 0: up to the next symbol).
type sym struct {
	Addr, Size uint64
	Name       string
}

// symtab is sorted by address.
type symtab []sym

func (s symtab) sort() {
	sort.Slice(s, func(i, j int) bool { return s[i].Addr < s[j].Addr })
}

// lookup returns the function holding addr, "" when none does.
func (s symtab) lookup(addr uint64) string {
	i := sort.Search(len(s), func(i int) bool { return s[i].Addr > addr }) - 1
	if i < 0 {
		return ""
	}
	if s[i].Size != 0 && addr >= s[i].Addr+s[i].Size {
		return ""
	}
	return s[i].Name
}

// kernelSymbols reads the text symbols of /proc/kallsyms (real addresses
// only as root; all zeros otherwise, which lookup then cannot match).
func kernelSymbols(path string) (symtab, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var s symtab
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff81000000 T _stext [module]"
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 3 || (f[1] != "t" && f[1] != "T" && f[1] != "w" && f[1] != "W") {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		s = append(s, sym{Addr: addr, Name: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	s.sort()
	return s, nil
}

// mapping is one executable mapping of /proc/<pid>/maps.
type mapping struct {
	Start, End, Offset uint64
	Path               string
	Key                string // dev:inode, identifies the file across processes
}

func parseMaps(data string) []mapping {
	var ms []mapping
	for _, line := range strings.Split(data, "\n") {
		// 00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon
		f := strings.Fields(line)
		if len(f) < 6 || len(f[1]) < 3 || f[1][2] != 'x' || !strings.HasPrefix(f[5], "/") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		off, err3 := strconv.ParseUint(f[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		ms = append(ms, mapping{Start: start, End: end, Offset: off,
			Path: strings.Join(f[5:], " "), Key: f[3] + ":" + f[4]})
	}
	return ms
}

// elfFile is what symbolising one binary needs: its functions and the
// loadable segments that turn a file offset into a link-time address.
type elfFile struct {
	syms  symtab
	loads []elf.ProgHeader
	gotab *gosym.Table
	err   error
}

func readELF(path string) *elfFile {
	f, err := elf.Open(path)
	if err != nil {
		return &elfFile{err: err}
	}
	defer f.Close()
	e := &elfFile{}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			e.loads = append(e.loads, p.ProgHeader)
		}
	}
	// .symtab when the binary has one (Go binaries, unstripped builds);
	// .dynsym covers stripped shared libraries such as libc.
	for _, read := range []func() ([]elf.Symbol, error){f.Symbols, f.DynamicSymbols} {
		syms, err := read()
		if err != nil {
			continue
		}
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
				e.syms = append(e.syms, sym{Addr: s.Value, Size: s.Size, Name: s.Name})
			}
		}
	}
	e.syms.sort()
	e.gotab = goTable(f)
	return e
}

// goTable reads a Go binary's pclntab: `go build -ldflags=-s` and `go test`
// drop .symtab, but Go keeps function names there for its own tracebacks.
func goTable(f *elf.File) *gosym.Table {
	text := f.Section(".text")
	pcln := f.Section(".gopclntab")
	if pcln == nil {
		pcln = f.Section(".data.rel.ro.gopclntab") // PIE builds
	}
	if text == nil || pcln == nil {
		return nil
	}
	data, err := pcln.Data()
	if err != nil {
		return nil
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil
	}
	return tab
}

// symbolise turns a file offset into a function name.
func (e *elfFile) symbolise(off uint64) string {
	for _, p := range e.loads {
		if off >= p.Off && off < p.Off+p.Filesz {
			addr := off - p.Off + p.Vaddr
			if name := e.syms.lookup(addr); name != "" {
				return name
			}
			if e.gotab != nil {
				if fn := e.gotab.PCToFunc(addr); fn != nil {
					return fn.Name
				}
			}
			return ""
		}
	}
	return ""
}

// symbolizer caches what it read: kallsyms once, each binary once (by
// dev:inode), each process' maps once.
type symbolizer struct {
	kallsymsPath string
	kernel       symtab
	kernelErr    error
	kernelRead   bool
	files        map[string]*elfFile
	maps         map[uint32][]mapping
}

func newSymbolizer() *symbolizer {
	return &symbolizer{kallsymsPath: "/proc/kallsyms", files: map[string]*elfFile{}, maps: map[uint32][]mapping{}}
}

func (s *symbolizer) kernelFrame(addr uint64) string {
	if !s.kernelRead {
		s.kernelRead = true
		s.kernel, s.kernelErr = kernelSymbols(s.kallsymsPath)
	}
	if name := s.kernel.lookup(addr); name != "" {
		return name
	}
	return fmt.Sprintf("0x%x", addr)
}

func (s *symbolizer) userFrame(pid uint32, addr uint64) string {
	ms, ok := s.maps[pid]
	if !ok {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err == nil {
			ms = parseMaps(string(data))
		}
		s.maps[pid] = ms
	}
	for _, m := range ms {
		if addr < m.Start || addr >= m.End {
			continue
		}
		e, ok := s.files[m.Key]
		if !ok {
			// Through map_files the mapped file opens even when it was
			// deleted or lives in another mount namespace.
			e = readELF(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
			if e.err != nil {
				e = readELF(m.Path)
			}
			s.files[m.Key] = e
		}
		if name := e.symbolise(addr - m.Start + m.Offset); name != "" {
			return name
		}
		return fmt.Sprintf("%s+0x%x", baseName(m.Path), addr-m.Start+m.Offset)
	}
	return fmt.Sprintf("0x%x", addr)
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
