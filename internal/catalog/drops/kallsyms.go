package drops

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Symbols resolves kernel text addresses to "function+0xoff".
type Symbols struct {
	addrs []uint64
	names []string
}

type ksym struct {
	addr uint64
	name string
}

// LoadKallsyms reads /proc/kallsyms. It is read once per trace, at Stop
// and only when there is something to name: the file is large (~10 MB).
func LoadKallsyms() (*Symbols, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("read kernel symbols: %w", err)
	}
	defer f.Close()
	return ParseKallsyms(f)
}

// ParseKallsyms reads the /proc/kallsyms format: "address type name
// [module]". Only text symbols count: a drop location is a return address.
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	var syms []ksym
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || (f[1] != "t" && f[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		name := f[2]
		if len(f) > 3 {
			name += " " + f[3]
		}
		syms = append(syms, ksym{addr, name})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kernel symbols: %w", err)
	}
	if len(syms) == 0 {
		return nil, errors.New("/proc/kallsyms shows no addresses (kernel.kptr_restrict, or not root)")
	}
	sort.Slice(syms, func(i, j int) bool { return syms[i].addr < syms[j].addr })
	s := &Symbols{addrs: make([]uint64, len(syms)), names: make([]string, len(syms))}
	for i, k := range syms {
		s.addrs[i], s.names[i] = k.addr, k.name
	}
	return s, nil
}

// Name returns "function+0xoff" for addr, the bare hex address when
// nothing is known (s nil or addr below every symbol), "-" for 0.
func (s *Symbols) Name(addr uint64) string {
	if addr == 0 {
		return "-"
	}
	if s == nil {
		return fmt.Sprintf("0x%x", addr)
	}
	i := sort.Search(len(s.addrs), func(i int) bool { return s.addrs[i] > addr }) - 1
	if i < 0 {
		return fmt.Sprintf("0x%x", addr)
	}
	name, module, _ := strings.Cut(s.names[i], " ")
	out := fmt.Sprintf("%s+0x%x", name, addr-s.addrs[i])
	if module != "" {
		out += " " + module
	}
	return out
}
