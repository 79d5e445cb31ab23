// Package procfmt reads small text formats the kernel uses in procfs and
// sysfs, shared by the packages that read those files (sysinfo for an
// investigation's facts, metrics for the backend's payload).
package procfmt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// UnescapeOctal decodes the kernel's \ooo escapes (fs/proc_namespace.c
// escapes space, tab, newline and backslash this way in mountinfo);
// anything else is left as it is.
func UnescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 || s[0] > '3' {
		return false
	}
	for i := range 3 {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// CPUListCount counts the CPUs of a sysfs CPU list such as "0-3,8,10-11".
func CPUListCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty CPU list")
	}
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return 0, fmt.Errorf("CPU list %q: bad CPU %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, fmt.Errorf("CPU list %q: bad range %q", s, part)
			}
		}
		// Bounded so a hostile list cannot overflow the count.
		if n += b - a + 1; n > 1<<20 {
			return 0, fmt.Errorf("CPU list %q: too many CPUs", s)
		}
	}
	return n, nil
}
