package sysinfo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// listedUnit is one row of systemctl list-units.
type listedUnit struct {
	Unit        string `json:"unit"`
	Load        string `json:"load"`
	Active      string `json:"active"`
	Sub         string `json:"sub"`
	Description string `json:"description"`
}

// services asks systemd, through its own client, which units failed and
// which services were restarted. systemctl is the agent's fixed read-only
// query here, bounded in time; it needs no D-Bus library.
func (c *collector) services(ctx context.Context, f *Facts) {
	b, err := c.read("/proc/1/comm")
	if err != nil {
		f.Services = "init system unknown (" + err.Error() + ")"
		return
	}
	if comm := strings.TrimSpace(string(b)); comm != "systemd" {
		f.Services = "systemd is not PID 1 (init: " + comm + ")"
		return
	}
	ctx, cancel := context.WithTimeout(ctx, systemctlTimeout)
	defer cancel()
	units, err := c.listUnits(ctx)
	if err != nil {
		c.warn("systemd units: %v", err)
		f.Services = "systemd units could not be listed"
		return
	}
	var services []string
	for _, u := range units {
		if u.Active == "failed" {
			f.FailedUnits = append(f.FailedUnits, Unit{Name: u.Unit, Description: u.Description, ActiveState: u.Active, SubState: u.Sub})
		}
		if strings.HasSuffix(u.Unit, ".service") && u.Load == "loaded" {
			services = append(services, u.Unit)
		}
	}
	shown, err := c.showUnits(ctx, services)
	if err != nil {
		c.warn("systemd restart counts: %v", err)
	}
	for i := range f.FailedUnits {
		if s, ok := shown[f.FailedUnits[i].Name]; ok {
			f.FailedUnits[i].Restarts, f.FailedUnits[i].Result = s.Restarts, s.Result
		}
	}
	for _, s := range shown {
		if s.Restarts > 0 {
			f.RestartingUnits = append(f.RestartingUnits, s)
		}
	}
	slices.SortFunc(f.RestartingUnits, func(a, b Unit) int {
		return cmp.Or(cmp.Compare(b.Restarts, a.Restarts), strings.Compare(a.Name, b.Name))
	})
	f.Services = fmt.Sprintf("systemd: %d failed units, %d services restarted", len(f.FailedUnits), len(f.RestartingUnits))
}

func (c *collector) systemctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.opts.Systemctl, args...)
	// A script standing in for systemctl may leave a child holding the
	// output pipe; do not wait for it past the kill.
	cmd.WaitDelay = 200 * time.Millisecond
	cmd.Env = []string{"SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, truncate(msg, 200))
		}
		return nil, fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// listUnits lists every loaded unit; systemd before 246 has no JSON
// output, so the plain table is the fallback.
func (c *collector) listUnits(ctx context.Context) ([]listedUnit, error) {
	out, err := c.systemctl(ctx, "list-units", "--all", "--output=json", "--no-pager")
	if err == nil {
		if units, jerr := parseUnitsJSON(out); jerr == nil {
			return units, nil
		}
	}
	if ctx.Err() != nil {
		return nil, err
	}
	out, err = c.systemctl(ctx, "list-units", "--all", "--plain", "--no-legend", "--no-pager")
	if err != nil {
		return nil, err
	}
	return parseUnitsTable(out), nil
}

func parseUnitsJSON(b []byte) ([]listedUnit, error) {
	var units []listedUnit
	if err := json.Unmarshal(b, &units); err != nil {
		return nil, err
	}
	return units, nil
}

// parseUnitsTable reads "UNIT LOAD ACTIVE SUB DESCRIPTION" rows.
func parseUnitsTable(b []byte) []listedUnit {
	var units []listedUnit
	for line := range bytes.Lines(b) {
		s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(line)), "●"))
		fields := strings.Fields(s)
		if len(fields) < 4 {
			continue
		}
		u := listedUnit{Unit: fields[0], Load: fields[1], Active: fields[2], Sub: fields[3]}
		if len(fields) > 4 {
			u.Description = strings.Join(fields[4:], " ")
		}
		units = append(units, u)
	}
	return units
}

// showUnits reads the restart count and result of the given services.
func (c *collector) showUnits(ctx context.Context, names []string) (map[string]Unit, error) {
	if len(names) == 0 {
		return nil, nil
	}
	args := append([]string{"show", "--no-pager", "--property=Id,Description,ActiveState,SubState,Result,NRestarts", "--"}, names...)
	out, err := c.systemctl(ctx, args...)
	if err != nil {
		return nil, err
	}
	return parseShow(out)
}

// parseShow reads systemctl show output: Key=Value lines, one blank line
// between units.
func parseShow(b []byte) (map[string]Unit, error) {
	units := make(map[string]Unit)
	var u Unit
	var bad error
	flush := func() {
		if u.Name != "" {
			units[u.Name] = u
		}
		u = Unit{}
	}
	for line := range bytes.Lines(b) {
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		switch k {
		case "Id":
			u.Name = v
		case "Description":
			u.Description = v
		case "ActiveState":
			u.ActiveState = v
		case "SubState":
			u.SubState = v
		case "Result":
			u.Result = v
		case "NRestarts":
			n, err := strconv.Atoi(v)
			if err != nil && bad == nil {
				bad = errors.New("NRestarts " + strconv.Quote(v) + " is not a number")
			}
			u.Restarts = n
		}
	}
	flush()
	return units, bad
}
