package sysinfo

import (
	"cmp"
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// cgroupRoot is one hierarchy to walk.
type cgroupRoot struct {
	dir     string // absolute host path of the mount
	version int
	memory  bool // v1: the memory controller is in this hierarchy
	pids    bool // v1: the pids controller is in this hierarchy
}

const (
	maxCgroupDepth  = 12
	maxCgroupsWalk  = 5000 // per hierarchy
	maxCgroupReport = 50
	// v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes, a little
	// under 2^63 depending on the page size.
	v1NoLimit = 1 << 62
)

// cgroupRoots finds the cgroup v2 mounts and the v1 hierarchies that
// carry the memory or pids controller.
func cgroupRoots(mounts []mountInfo) []cgroupRoot {
	var roots []cgroupRoot
	seen := make(map[string]bool)
	for _, m := range mounts {
		if seen[m.Mount] {
			continue
		}
		switch m.FSType {
		case "cgroup2":
			roots = append(roots, cgroupRoot{dir: m.Mount, version: 2})
			seen[m.Mount] = true
		case "cgroup":
			r := cgroupRoot{dir: m.Mount, version: 1,
				memory: slices.Contains(m.SuperOptions, "memory"),
				pids:   slices.Contains(m.SuperOptions, "pids")}
			if r.memory || r.pids {
				roots = append(roots, r)
				seen[m.Mount] = true
			}
		}
	}
	return roots
}

// fallbackCgroupRoots guesses the usual places when the mount table
// could not be read.
func (c *collector) fallbackCgroupRoots() []cgroupRoot {
	exists := func(p string) bool { _, err := os.Stat(c.path(p)); return err == nil }
	var roots []cgroupRoot
	if exists("/sys/fs/cgroup/cgroup.controllers") {
		return []cgroupRoot{{dir: "/sys/fs/cgroup", version: 2}}
	}
	if exists("/sys/fs/cgroup/unified/cgroup.controllers") {
		roots = append(roots, cgroupRoot{dir: "/sys/fs/cgroup/unified", version: 2})
	}
	if exists("/sys/fs/cgroup/memory/memory.usage_in_bytes") {
		roots = append(roots, cgroupRoot{dir: "/sys/fs/cgroup/memory", version: 1, memory: true})
	}
	if exists("/sys/fs/cgroup/pids/cgroup.procs") {
		roots = append(roots, cgroupRoot{dir: "/sys/fs/cgroup/pids", version: 1, pids: true})
	}
	return roots
}

// cgroups walks each hierarchy, bounded in depth and count, and reports
// the cgroups whose memory or pids limit was hit or nearly reached.
func (c *collector) cgroups(mounts []mountInfo, mountsOK bool) []Cgroup {
	roots := cgroupRoots(mounts)
	if !mountsOK {
		roots = c.fallbackCgroupRoots()
	}
	if len(roots) == 0 {
		c.warn("cgroups: no cgroup v2 mount and no v1 memory or pids hierarchy found")
		return nil
	}
	type key struct {
		version int
		path    string
	}
	merged := make(map[key]*Cgroup)
	for _, r := range roots {
		c.walkCgroups(r, func(rel string, cg Cgroup) {
			k := key{r.version, rel}
			if old, ok := merged[k]; ok {
				mergeCgroup(old, cg)
				return
			}
			cg.Path, cg.Version = rel, r.version
			merged[k] = &cg
		})
	}
	var out []Cgroup
	for _, cg := range merged {
		if cgroupAlarming(cg) {
			out = append(out, *cg)
		}
	}
	slices.SortFunc(out, func(a, b Cgroup) int {
		return cmp.Or(cmp.Compare(b.OOMKills, a.OOMKills), cmp.Compare(b.PIDsMaxEvents, a.PIDsMaxEvents),
			cmp.Compare(a.Path, b.Path), cmp.Compare(a.Version, b.Version))
	})
	if len(out) > maxCgroupReport {
		c.warn("%d cgroups at or near a limit; the first %d are kept", len(out), maxCgroupReport)
		out = out[:maxCgroupReport]
	}
	return out
}

func cgroupAlarming(cg *Cgroup) bool {
	near := func(used, limit uint64) bool { return limit > 0 && used*10 >= limit*9 }
	return cg.OOMKills > 0 || cg.PIDsMaxEvents > 0 ||
		near(cg.MemoryBytes, cg.MemoryLimitBytes) || near(cg.PIDs, cg.PIDsMax)
}

// mergeCgroup joins what two v1 hierarchies (memory, pids) say about
// the same path.
func mergeCgroup(dst *Cgroup, src Cgroup) {
	if src.MemoryLimitBytes != 0 || src.MemoryBytes != 0 || src.OOMKills != 0 {
		dst.MemoryLimitBytes, dst.MemoryBytes, dst.OOMKills = src.MemoryLimitBytes, src.MemoryBytes, src.OOMKills
	}
	if src.PIDsMax != 0 || src.PIDs != 0 || src.PIDsMaxEvents != 0 {
		dst.PIDsMax, dst.PIDs, dst.PIDsMaxEvents = src.PIDsMax, src.PIDs, src.PIDsMaxEvents
	}
}

// walkCgroups visits every cgroup below the root breadth first (the root
// itself has no limits and its counters are the host's).
func (c *collector) walkCgroups(r cgroupRoot, visit func(rel string, cg Cgroup)) {
	base := c.path(r.dir)
	type item struct {
		rel   string
		depth int
	}
	queue := []item{{"/", 0}}
	walked, bad := 0, 0
	var firstErr error
	defer func() {
		if bad > 0 {
			c.warn("cgroups under %s: %d unreadable (first: %v)", r.dir, bad, firstErr)
		}
	}()
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		dir := path.Join(base, it.rel)
		entries, err := os.ReadDir(dir)
		if err != nil {
			if it.depth == 0 {
				c.warn("cgroups: %v", err)
			}
			continue // removed while walking
		}
		if it.depth > 0 {
			cg, err := c.readCgroup(dir, r)
			if err != nil {
				if bad++; firstErr == nil {
					firstErr = err
				}
			}
			visit(it.rel, cg)
		}
		if it.depth == maxCgroupDepth {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if walked++; walked > maxCgroupsWalk {
				c.warn("cgroups under %s: stopped after %d", r.dir, maxCgroupsWalk)
				return
			}
			queue = append(queue, item{path.Join(it.rel, e.Name()), it.depth + 1})
		}
	}
}

// readCgroup reads the memory and pids files of one cgroup. Missing files
// are normal (controller not enabled there) and leave their fields zero.
func (c *collector) readCgroup(dir string, r cgroupRoot) (Cgroup, error) {
	var cg Cgroup
	read := func(name string) ([]byte, bool, error) {
		b, err := os.ReadFile(dir + "/" + name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		return b, true, nil
	}
	// firstOf reads the first file that exists: the .local variants count
	// only this cgroup's events, where they exist (5.2 memory, 6.13 pids).
	firstOf := func(names ...string) ([]byte, bool, error) {
		for _, n := range names {
			b, ok, err := read(n)
			if ok || err != nil {
				return b, ok, err
			}
		}
		return nil, false, nil
	}
	var errs []error
	num := func(name string) uint64 {
		b, ok, err := read(name)
		if err != nil {
			errs = append(errs, err)
		}
		if !ok {
			return 0
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			errs = append(errs, errors.New(name+": "+err.Error()))
		}
		return v
	}
	key := func(b []byte, k string) uint64 { return parseKeyValues(b)[k] }
	inactiveFile := func(field string) uint64 {
		b, ok, err := read("memory.stat")
		if err != nil || !ok {
			return 0
		}
		return key(b, field)
	}
	// Usage includes page cache the kernel would drop before any OOM
	// kill, so a cgroup full of cache is not near its limit: the working
	// set (usage less inactive file pages) is what counts, as kubelet
	// does for evictions.
	workingSet := func(usage, limit uint64, field string) uint64 {
		if limit == 0 || usage*10 < limit*9 {
			return usage
		}
		return sub(inactiveFile(field), usage)
	}

	if r.version == 2 {
		cg.MemoryLimitBytes = num("memory.max")
		if b, ok, err := firstOf("memory.events.local", "memory.events"); ok {
			cg.OOMKills = key(b, "oom_kill")
		} else if err != nil {
			errs = append(errs, err)
		}
		cg.MemoryBytes = workingSet(num("memory.current"), cg.MemoryLimitBytes, "inactive_file")
	}
	if r.version == 1 && r.memory {
		if cg.MemoryLimitBytes = num("memory.limit_in_bytes"); cg.MemoryLimitBytes >= v1NoLimit {
			cg.MemoryLimitBytes = 0
		}
		if b, ok, err := read("memory.oom_control"); ok {
			cg.OOMKills = key(b, "oom_kill")
		} else if err != nil {
			errs = append(errs, err)
		}
		cg.MemoryBytes = workingSet(num("memory.usage_in_bytes"), cg.MemoryLimitBytes, "total_inactive_file")
	}
	if r.version == 2 || r.pids {
		cg.PIDsMax = num("pids.max")
		cg.PIDs = num("pids.current")
		if b, ok, err := firstOf("pids.events.local", "pids.events"); ok {
			cg.PIDsMaxEvents = key(b, "max")
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return cg, errors.Join(errs...)
}
