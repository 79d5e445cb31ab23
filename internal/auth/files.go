package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Names of the files kept beside token.json (§2.2 of the contract for the
// first two; state.json is the daemon's).
const (
	RefreshTokenFile = ".refresh_token"
	StateFile        = "state.json"
)

// maxFileBytes bounds what is read of a token or state file: a real one
// is a few hundred bytes.
const maxFileBytes = 64 << 10

// files are the token and state files of one token_path and the checks
// that keep them private: tokens another user can read have leaked, and
// tokens another user can write point the agent at an account of theirs.
type files struct {
	tokenPath string
	euid      int
}

func newFiles(tokenPath string) files { return files{tokenPath: tokenPath, euid: os.Geteuid()} }

func (f files) dir() string         { return filepath.Dir(f.tokenPath) }
func (f files) refreshPath() string { return filepath.Join(f.dir(), RefreshTokenFile) }
func (f files) statePath() string   { return filepath.Join(f.dir(), StateFile) }

// ours reports whether a directory entry is one of the files this
// package writes (or a temporary file of a write cut short).
func (f files) ours(name string) bool {
	base := filepath.Base(f.tokenPath)
	switch name {
	case base, RefreshTokenFile, StateFile:
		return true
	}
	for _, n := range []string{base, RefreshTokenFile, StateFile} {
		if strings.HasPrefix(name, "."+n+".tmp") {
			return true
		}
	}
	return false
}

// ownerOf is the uid owning st.
func ownerOf(st fs.FileInfo) (int, bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(s.Uid), true
}

// checkDir makes sure the directory is private before anything in it is
// read or written. A missing directory is created 0700 when create is
// set (and reported as fs.ErrNotExist otherwise).
//
// A directory group or others can write is refused, since they could
// replace the files; one that is only readable by them is tightened when
// this process owns it and it holds nothing but these files (a
// directory made by hand or by a package with 0755), and otherwise left
// alone: /etc, say, is shared, and the files themselves are 0600.
func (f files) checkDir(create bool) error {
	dir := f.dir()
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating the token directory %s: %w", dir, err)
		}
		// MkdirAll's mode is filtered by the umask.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("token directory %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("token directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("token directory %s is not a directory (token_path is %s)", dir, f.tokenPath)
	}
	uid, ok := ownerOf(st)
	if ok && uid != f.euid && uid != 0 {
		return fmt.Errorf("token directory %s belongs to uid %d, who could replace the tokens: run chown root:root %s, or set token_path in a directory only root can write", dir, uid, dir)
	}
	perm := st.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if uid == f.euid && st.Mode()&os.ModeSticky == 0 && f.dedicated(dir) {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("token directory %s has mode %04o and cannot be made 0700: %w", dir, perm, err)
		}
		return nil
	}
	if perm&0o022 != 0 {
		unixMode := uint32(perm)
		if st.Mode()&os.ModeSticky != 0 {
			unixMode |= 0o1000
		}
		return fmt.Errorf("token directory %s has mode %04o: group or others can write it and so replace the tokens; run chmod 700 %s, or set token_path in a directory only root can write", dir, unixMode, dir)
	}
	return nil
}

// dedicated reports whether dir holds only this package's files.
func (f files) dedicated(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !f.ours(e.Name()) {
			return false
		}
	}
	return true
}

// checkFile makes sure an existing file is a private regular file:
// a wider mode is narrowed to 0600 when this process owns the file,
// otherwise it is an error saying what to run. fs.ErrNotExist passes
// through for the caller.
func (f files) checkFile(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link; the token files must be regular files (remove it and register again)", path)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	uid, ok := ownerOf(st)
	if ok && uid != f.euid && uid != 0 {
		return fmt.Errorf("%s belongs to uid %d, who could change the tokens: run chown root:root %s", path, uid, path)
	}
	perm := st.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if ok && uid == f.euid {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("%s has mode %04o and cannot be made 0600: %w", path, perm, err)
		}
		return nil
	}
	return fmt.Errorf("%s has mode %04o, which lets other users read or change it: run chmod 600 %s", path, perm, path)
}

// readPrivate reads a file after checking it, bounded. Errors name the
// file; a missing file is fs.ErrNotExist in the chain.
func (f files) readPrivate(path string) ([]byte, error) {
	if err := f.checkFile(path); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%s: %w (the token files belong to root: run nannyagent with sudo)", path, err)
		}
		return nil, err
	}
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%w (the token files belong to root: run nannyagent with sudo)", err)
		}
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is not a file nannyagent wrote", path, maxFileBytes)
	}
	return data, nil
}

// writeAtomic replaces path with data, mode 0600: a temporary file in
// the same directory, written and synced, renamed over the old one, then
// the directory synced, so that a crash leaves the old file or the new
// one and never a torn one.
func (f files) writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	// CreateTemp makes 0600 files; Chmod keeps that true whatever the
	// umask or the platform does.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
