package sysinfo

import (
	"os"
	"slices"
	"strings"
)

// blockDevices lists the whole block devices of /sys/class/block whose
// size is above zero. A detached loop device keeps its node but has
// size 0, and so does a drive without a medium: neither is a device that
// I/O can fail on now.
func (c *collector) blockDevices() []BlockDevice {
	dir := c.path("/sys/class/block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.warn("block devices: %v", err)
		return nil
	}
	var out []BlockDevice
	for _, e := range entries {
		name := e.Name()
		base := dir + "/" + name
		if _, err := os.Stat(base + "/partition"); err == nil {
			continue
		}
		b, err := os.ReadFile(base + "/size")
		if err != nil {
			continue
		}
		sectors, err := parseUint(b)
		if err != nil || sectors == 0 {
			continue
		}
		d := BlockDevice{Name: strings.ReplaceAll(name, "!", "/"), SizeBytes: sectors * sectorBytes}
		if ro, err := os.ReadFile(base + "/ro"); err == nil {
			d.ReadOnly = strings.TrimSpace(string(ro)) == "1"
		}
		if bf, err := os.ReadFile(base + "/loop/backing_file"); err == nil {
			d.BackingFile = truncate(c.opts.Redact(strings.TrimSpace(string(bf))), maxCmdline)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b BlockDevice) int { return strings.Compare(a.Name, b.Name) })
	return out
}
