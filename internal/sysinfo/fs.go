package sysinfo

import (
	"bytes"
	"fmt"
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountInfo is one line of /proc/[pid]/mountinfo (proc_pid_mountinfo(5)).
type mountInfo struct {
	Major, Minor int
	Root         string // the directory of the filesystem mounted here
	Mount        string
	ReadOnly     bool // per-mount "ro"
	FSType       string
	Source       string
	SuperOptions []string
}

// parseMountinfo reads mountinfo. Paths come with spaces, tabs, newlines
// and backslashes as octal escapes (\040), which are decoded.
func parseMountinfo(data []byte) ([]mountInfo, error) {
	var out []mountInfo
	n := 0
	for line := range bytes.Lines(data) {
		n++
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		sep := slices.Index(fields, "-")
		// Six fields before the optional ones, three after the separator;
		// the source may be empty in old kernels' output and then the
		// super options move left, so two after is accepted.
		if sep < 6 || len(fields)-sep < 3 {
			return nil, fmt.Errorf("line %d: malformed (%d fields, separator at %d)", n, len(fields), sep)
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		if !ok {
			return nil, fmt.Errorf("line %d: device %q is not major:minor", n, fields[2])
		}
		var m mountInfo
		var err error
		if m.Major, err = strconv.Atoi(maj); err != nil {
			return nil, fmt.Errorf("line %d: major %q", n, maj)
		}
		if m.Minor, err = strconv.Atoi(min); err != nil {
			return nil, fmt.Errorf("line %d: minor %q", n, min)
		}
		m.Root = procfmt.UnescapeOctal(fields[3])
		m.Mount = procfmt.UnescapeOctal(fields[4])
		m.ReadOnly = slices.Contains(strings.Split(fields[5], ","), "ro")
		m.FSType = fields[sep+1]
		if len(fields)-sep >= 4 {
			m.Source = procfmt.UnescapeOctal(fields[sep+2])
			m.SuperOptions = strings.Split(fields[sep+3], ",")
		} else {
			m.SuperOptions = strings.Split(fields[sep+2], ",")
		}
		out = append(out, m)
	}
	return out, nil
}

func (c *collector) mountinfo() ([]mountInfo, bool) {
	b, err := c.read("/proc/self/mountinfo")
	if err != nil {
		c.warn("mounts: %v", err)
		return nil, false
	}
	m, err := parseMountinfo(b)
	if err != nil {
		c.warn("/proc/self/mountinfo: %v", err)
		return nil, false
	}
	return m, true
}

// dataFS are the filesystem types whose space and inodes can run out:
// disk filesystems, memory-backed ones with a size, network ones.
var dataFS = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "bcachefs": true,
	"zfs": true, "f2fs": true, "jfs": true, "reiserfs": true, "nilfs2": true, "hfsplus": true,
	"vfat": true, "msdos": true, "exfat": true, "ntfs": true, "ntfs3": true, "fuseblk": true,
	"tmpfs": true, "nfs": true, "nfs4": true, "cifs": true, "smb3": true, "ceph": true,
	"glusterfs": true, "fuse.glusterfs": true, "virtiofs": true, "9p": true, "lustre": true,
	"gfs2": true, "ocfs2": true,
}

// imageFS are read-only images that are always full by construction.
var imageFS = map[string]bool{"squashfs": true, "iso9660": true, "udf": true, "erofs": true, "cramfs": true}

const maxFilesystems = 256

// selectFilesystems keeps the data filesystems, one per mount point (the
// last mounted, which hides the others), sorted by mount point.
func selectFilesystems(mounts []mountInfo) ([]mountInfo, int) {
	byMount := make(map[string]int)
	var keep []mountInfo
	for _, m := range mounts {
		if !dataFS[m.FSType] && (m.Major == 0 || imageFS[m.FSType]) {
			continue
		}
		if under(m.Mount, "/proc") || under(m.Mount, "/sys") {
			continue
		}
		if i, ok := byMount[m.Mount]; ok {
			keep[i] = m
			continue
		}
		byMount[m.Mount] = len(keep)
		keep = append(keep, m)
	}
	slices.SortFunc(keep, func(a, b mountInfo) int { return strings.Compare(a.Mount, b.Mount) })
	dropped := 0
	if len(keep) > maxFilesystems {
		dropped = len(keep) - maxFilesystems
		keep = keep[:maxFilesystems]
	}
	return keep, dropped
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// statfsFunc is unix.Statfs; tests replace it to play a hung mount.
var statfsFunc = unix.Statfs

// filesystems statfs's each data filesystem, all at once, and gives up
// on those that do not answer within statfsTimeout: a hard-mounted NFS
// whose server is gone blocks statfs forever. A stuck call keeps its
// goroutine and thread until the kernel lets go; it writes into a
// buffered channel nobody reads and then ends.
func (c *collector) filesystems(mounts []mountInfo) []Filesystem {
	sel, dropped := selectFilesystems(mounts)
	if dropped > 0 {
		c.warn("%d more filesystems left out (limit %d)", dropped, maxFilesystems)
	}
	type result struct {
		i   int
		st  unix.Statfs_t
		err error
	}
	results := make(chan result, len(sel))
	statfs := statfsFunc
	for i, m := range sel {
		go func() {
			var st unix.Statfs_t
			err := statfs(c.path(m.Mount), &st)
			results <- result{i, st, err}
		}()
	}
	got := make([]*result, len(sel))
	timeout := time.NewTimer(statfsTimeout)
	defer timeout.Stop()
wait:
	for range sel {
		select {
		case r := <-results:
			got[r.i] = &r
		case <-timeout.C:
			break wait
		}
	}
	var out []Filesystem
	for i, m := range sel {
		r := got[i]
		if r == nil {
			c.warn("statfs %s (%s %s): no answer within %v (hung network filesystem?)", m.Mount, m.FSType, m.Source, statfsTimeout)
			continue
		}
		if r.err != nil {
			c.warn("statfs %s: %v", m.Mount, r.err)
			continue
		}
		out = append(out, fsFromStatfs(m, &r.st))
	}
	return out
}

func fsFromStatfs(m mountInfo, st *unix.Statfs_t) Filesystem {
	bs := uint64(st.Frsize)
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	f := Filesystem{
		Mount:      m.Mount,
		Device:     m.Source,
		Type:       m.FSType,
		ReadOnly:   m.ReadOnly || st.Flags&unix.ST_RDONLY != 0,
		SizeBytes:  st.Blocks * bs,
		UsedBytes:  sub(st.Bfree, st.Blocks) * bs,
		AvailBytes: st.Bavail * bs,
		Inodes:     st.Files,
		InodesFree: st.Ffree,
		InodesUsed: sub(st.Ffree, st.Files),
	}
	return f
}
