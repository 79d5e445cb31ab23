package metrics

import (
	"strings"
	"unicode"
)

// familyOf maps os-release IDs to the families the backend keys its patch
// scripts on (alpine, arch, debian, rhel, suse). The spellings follow
// gopsutil's host.PlatformInformation, which the earlier agent used, with
// one deliberate difference: Fedora is "rhel" here (gopsutil says
// "fedora", for which the backend has no script, while its dnf script
// serves Fedora and its own LXC map files fedora under rhel).
var familyOf = map[string]string{
	"debian": "debian", "ubuntu": "debian", "linuxmint": "debian", "raspbian": "debian",
	"pop": "debian", "elementary": "debian", "kali": "debian", "devuan": "debian",
	"zorin": "debian", "deepin": "debian", "pureos": "debian", "parrot": "debian",

	"rhel": "rhel", "redhat": "rhel", "centos": "rhel", "fedora": "rhel", "rocky": "rhel",
	"almalinux": "rhel", "ol": "rhel", "oracle": "rhel", "amzn": "rhel", "amazon": "rhel",
	"scientific": "rhel", "cloudlinux": "rhel", "xenserver": "rhel", "anolis": "rhel",
	"eurolinux": "rhel", "virtuozzo": "rhel", "enterpriseenterprise": "rhel", "ibm_powerkvm": "rhel",

	"suse": "suse", "sles": "suse", "sled": "suse", "sles_sap": "suse", "opensuse": "suse",
	"opensuse-leap": "suse", "opensuse-tumbleweed": "suse", "opensuse-microos": "suse",

	"arch": "arch", "archlinux": "arch", "archarm": "arch", "manjaro": "arch", "manjaro-arm": "arch",
	"endeavouros": "arch", "garuda": "arch", "artix": "arch",

	"alpine": "alpine", "postmarketos": "alpine",

	"gentoo": "gentoo",
}

// legacyRelease names the release files that identify a distribution
// without os-release (older than systemd's convention), in the order
// gopsutil tries them.
var legacyRelease = []struct{ file, family, id string }{
	{"/etc/debian_version", "debian", "debian"},
	{"/etc/redhat-release", "rhel", "rhel"},
	{"/etc/SuSE-release", "suse", "suse"},
	{"/etc/arch-release", "arch", "arch"},
	{"/etc/alpine-release", "alpine", "alpine"},
	{"/etc/gentoo-release", "gentoo", "gentoo"},
}

// platformFamily derives the family from os-release's ID, then each
// ID_LIKE entry in order; a distribution none of them maps is its own
// family (what the earlier agent sent when gopsutil knew no family), and
// with no ID at all the family is "unknown": the backend refuses an empty
// one.
func platformFamily(id, idLike string) string {
	id = normalizeID(id)
	if f, ok := familyOf[id]; ok {
		return f
	}
	for like := range strings.FieldsSeq(idLike) {
		if f, ok := familyOf[normalizeID(like)]; ok {
			return f
		}
	}
	if id != "" {
		return truncate(id, MaxPlatformFamily)
	}
	return "unknown"
}

// normalizeID lowercases an os-release identifier and keeps only the
// characters os-release(5) allows in one (a-z, 0-9, ".", "_", "-").
func normalizeID(s string) string {
	return strings.Map(func(r rune) rune {
		r = unicode.ToLower(r)
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return -1
	}, s)
}
