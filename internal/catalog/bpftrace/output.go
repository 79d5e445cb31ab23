package bpftrace

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/nannyagent/nannyagent/internal/catalog"
)

// capped keeps the first and the last half of max bytes written to it, so
// a chatty script costs bounded memory and its final maps (printed last)
// survive next to its first lines.
type capped struct {
	mu    sync.Mutex
	max   int
	head  []byte
	tail  []byte // ring of the last max/2 bytes once head is full
	pos   int    // next write position in tail once it is full
	total int
}

func newCapped(max int) *capped { return &capped{max: max} }

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += len(p)
	half := c.max / 2
	rest := p
	if n := half - len(c.head); n > 0 {
		if n > len(rest) {
			n = len(rest)
		}
		c.head = append(c.head, rest[:n]...)
		rest = rest[n:]
	}
	tailMax := c.max - half
	for len(rest) > 0 && tailMax > 0 {
		if len(c.tail) < tailMax {
			n := tailMax - len(c.tail)
			if n > len(rest) {
				n = len(rest)
			}
			c.tail = append(c.tail, rest[:n]...)
			rest = rest[n:]
			continue
		}
		n := copy(c.tail[c.pos:], rest)
		c.pos = (c.pos + n) % tailMax
		rest = rest[n:]
	}
	return len(p), nil
}

// Total is every byte written; Dropped how many of them were not kept.
func (c *capped) Total() int { c.mu.Lock(); defer c.mu.Unlock(); return c.total }
func (c *capped) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total - len(c.head) - len(c.tail)
}

// String is the kept output, with a marker where bytes were dropped.
func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	b.Write(c.head)
	if dropped := c.total - len(c.head) - len(c.tail); dropped > 0 {
		b.WriteString("\n…[" + strconv.Itoa(dropped) + " bytes truncated]…\n")
	}
	b.Write(c.tail[c.pos:])
	b.Write(c.tail[:c.pos])
	return b.String()
}

var (
	// "@name: 12" and "@name[key, key]: 12" as print() and the exit dump
	// write them.
	mapLine = regexp.MustCompile(`^(@[A-Za-z0-9_]*)(?:\[(.*)\])?: (-?\d+)$`)
	// "@name: count 3, average 4, total 12" (stats) and other scalars.
	scalarLine = regexp.MustCompile(`^(@[A-Za-z0-9_]*): (\S.*)$`)
	// "@name:" or "@name[key]:" alone opens a histogram.
	histHead = regexp.MustCompile(`^(@[A-Za-z0-9_]*(?:\[.*\])?):\s*$`)
	// "[4, 8)   12 |@@@@   |" and "[0]   3 |@ |".
	histLine = regexp.MustCompile(`^\[(-?[0-9]+[KMGTP]?)(?:, (-?[0-9]+[KMGTP]?|\.\.\.))?[\])]\s+(\d+)\s*\|`)
)

// parseOutput turns the maps bpftrace prints at exit into tables (scalars
// and keyed counts, largest first) and histograms, so a fallback result
// reads like an entry's. Lines it does not recognise stay in the raw output.
func parseOutput(out string, res *catalog.Result) {
	type keyed struct {
		name string
		rows map[string]uint64
	}
	var maps []*keyed
	byName := map[string]*keyed{}
	var scalars [][2]string
	var hist *catalog.Histogram
	flush := func() {
		if hist != nil && len(hist.Buckets) > 0 {
			hist.P50, hist.P90, hist.P99 = hist.Percentile(50), hist.Percentile(90), hist.Percentile(99)
			res.Histograms = append(res.Histograms, *hist)
		}
		hist = nil
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, " \r")
		if hist != nil {
			if m := histLine.FindStringSubmatch(line); m != nil {
				low, _ := parseSize(m[1])
				high := low
				if m[2] == "..." {
					high = ^uint64(0)
				} else if m[2] != "" {
					h, _ := parseSize(m[2])
					if h > 0 {
						high = h - 1
					}
				}
				n, _ := strconv.ParseUint(m[3], 10, 64)
				hist.Buckets = append(hist.Buckets, catalog.Bucket{Low: low, High: high, Count: n})
				hist.Count += n
				continue
			}
			if line == "" && len(hist.Buckets) == 0 {
				continue
			}
			flush()
		}
		if m := histHead.FindStringSubmatch(line); m != nil {
			hist = &catalog.Histogram{Title: m[1]}
			continue
		}
		m := mapLine.FindStringSubmatch(line)
		if m == nil {
			if m = scalarLine.FindStringSubmatch(line); m != nil {
				scalars = append(scalars, [2]string{m[1], m[2]})
			}
			continue
		}
		if m[2] == "" {
			scalars = append(scalars, [2]string{m[1], m[3]})
			continue
		}
		v, err := strconv.ParseUint(m[3], 10, 64)
		if err != nil { // a negative sum does not rank: list it as is
			scalars = append(scalars, [2]string{m[1] + "[" + m[2] + "]", m[3]})
			continue
		}
		k := byName[m[1]]
		if k == nil {
			k = &keyed{name: m[1], rows: map[string]uint64{}}
			byName[m[1]] = k
			maps = append(maps, k)
		}
		k.rows[m[2]] = v
	}
	flush()
	if len(scalars) > 0 {
		t := catalog.Table{Title: "bpftrace scalar maps", Columns: []string{"map", "value"}}
		for _, s := range scalars {
			t.AddRow(s[0], s[1])
		}
		res.Tables = append(res.Tables, t)
	}
	for _, k := range maps {
		t := catalog.Table{Title: "bpftrace map " + k.name, Columns: []string{"key", "value"}}
		top, total := catalog.TopN(k.rows, catalog.MaxRows, func(a, b string) bool { return a < b })
		for _, r := range top {
			t.AddRow(r.Key, strconv.FormatUint(r.Score, 10))
		}
		t.TotalRows = total
		res.Tables = append(res.Tables, t)
	}
	sort.SliceStable(res.Histograms, func(i, j int) bool { return res.Histograms[i].Count > res.Histograms[j].Count })
}

// parseSize reads a histogram bound: "512", "4K", "1M" (powers of 1024).
func parseSize(s string) (uint64, bool) {
	mult := uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		case 'P':
			mult = 1 << 50
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	if strings.HasPrefix(s, "-") {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v * mult, err == nil
}
