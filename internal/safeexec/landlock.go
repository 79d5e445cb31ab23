package safeexec

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock is driven with raw system calls rather than go-landlock: that
// module needs libcap's psx (absent from go.sum) to restrict every OS
// thread, and the sandbox child restricts one locked thread that execs
// right after, which the kernel carries across execve on its own.

// landlockVersion asks the kernel for its Landlock ABI version. Tests
// replace it to play a kernel without Landlock.
var landlockVersion = func() (uintptr, unix.Errno) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	return v, errno
}

// landlockABI returns the kernel's Landlock ABI version.
func landlockABI() (int, error) {
	v, errno := landlockVersion()
	switch {
	case errno == unix.ENOSYS:
		return 0, errors.New("kernel built without Landlock")
	case errno == unix.EOPNOTSUPP:
		return 0, errors.New("Landlock not enabled at boot (lsm=)")
	case errno != 0:
		return 0, errno
	}
	return int(v), nil
}

// landlockHandled returns the filesystem rights an ABI version knows:
// every one is handled, so everything not granted below is refused.
func landlockHandled(abi int) uint64 {
	h := uint64(unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM)
	if abi >= 2 {
		h |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		h |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		h |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	// RESOLVE_UNIX (newer ABIs) stays unhandled: systemctl, journalctl
	// and docker talk to their daemons over path sockets.
	return h
}

// landlockRulesetAttr is the kernel's struct up to the scoped field;
// passing this size works on kernels that know fewer fields as long as
// the unknown ones are zero.
type landlockRulesetAttr struct {
	handledFS  uint64
	handledNet uint64
	scoped     uint64
}

// restrictLandlock lets the calling thread read and execute everywhere
// and write only to /dev/null and beneath scratch (a private tmpfs; ""
// for none). The caller checked that the kernel has Landlock at abi;
// no_new_privs must be set first.
func restrictLandlock(abi int, scratch string) error {
	handled := landlockHandled(abi)
	attr := landlockRulesetAttr{handledFS: handled}
	if abi >= 6 {
		// Signals to processes outside the sandbox are refused here too.
		attr.scoped = unix.LANDLOCK_SCOPE_SIGNAL
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	defer unix.Close(int(fd))

	read := uint64(unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR)
	// Block devices answer size and geometry ioctls to lsblk and blkid;
	// the ioctls that change a device need CAP_SYS_ADMIN or a writable
	// open, both gone.
	read |= handled & unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	if err := landlockAllow(int(fd), "/", read); err != nil {
		return err
	}
	devNull := uint64(unix.LANDLOCK_ACCESS_FS_READ_FILE|unix.LANDLOCK_ACCESS_FS_WRITE_FILE) |
		handled&(unix.LANDLOCK_ACCESS_FS_TRUNCATE|unix.LANDLOCK_ACCESS_FS_IOCTL_DEV)
	if err := landlockAllow(int(fd), "/dev/null", devNull); err != nil {
		return err
	}
	if scratch != "" {
		// Files, directories, links, FIFOs and sockets; no device nodes
		// (the tmpfs is nodev and CAP_MKNOD is gone anyway).
		rw := read | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
			unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
			unix.LANDLOCK_ACCESS_FS_MAKE_SYM | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
			handled&(unix.LANDLOCK_ACCESS_FS_REFER|unix.LANDLOCK_ACCESS_FS_TRUNCATE)
		if err := landlockAllow(int(fd), scratch, rw); err != nil {
			return err
		}
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return nil
}

func landlockAllow(rulesetFD int, path string, access uint64) error {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(pfd)
	rule := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(pfd)}
	_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(rulesetFD), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("landlock_add_rule %s: %w", path, errno)
	}
	return nil
}
