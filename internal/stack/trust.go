package stack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Owners says who may own what in a home. Everything a home holds is owned
// by UID, the user who runs socnet, except what PostgreSQL writes itself:
// when socnet runs as root, PostgreSQL runs as its own OS account (DataUID),
// which owns the clusters' data directories and the nodes' logs.
type Owners struct {
	UID     int // the user who runs socnet
	DataUID int // PostgreSQL's OS account when it is not UID; -1 when none
}

// UntrustedError is an entry of a home that someone other than its owners
// could have written or replaced. Its message is one line that ends with the
// command that fixes it.
type UntrustedError struct {
	Path    string
	Problem string // "is writable by group or others (mode 0777)"
	Fix     string // "run chmod go-w /path"
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Path, e.Problem, e.Fix)
}

// CheckHome refuses a home that another local user could have written:
//   - the home's parents are owned by root or by o.UID and are not writable
//     by group or others unless sticky (as /tmp), so nobody else can rename
//     the home away and put another in its place;
//   - the home is a directory, not a symbolic link, owned by o.UID and not
//     writable by group or others;
//   - every entry directly in the home, in logs/, in clusters/ and in each
//     cluster's directory is no symbolic link, is not writable by group or
//     others, and is owned by o.UID; the nodes' logs (in logs/) and data
//     directories (in clusters/NAME/) may be owned by o.DataUID instead.
//
// Data directories are not descended into: PostgreSQL checks the owner and
// mode of its own. A home that does not exist passes (its parents are still
// checked). The first problem found is returned as an *UntrustedError.
func CheckHome(h Home, o Owners) error {
	parent, err := filepath.EvalSymlinks(filepath.Dir(h.Dir))
	if err != nil {
		return fmt.Errorf("check home %s: %w", h.Dir, err)
	}
	if err := checkParents(parent, o); err != nil {
		return err
	}
	fi, err := os.Lstat(h.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check home %s: %w", h.Dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := filepath.EvalSymlinks(h.Dir)
		return &UntrustedError{Path: h.Dir, Problem: "is a symbolic link",
			Fix: fmt.Sprintf("pass the directory itself (--home %s)", target)}
	}
	if !fi.IsDir() {
		return &UntrustedError{Path: h.Dir, Problem: "is not a directory", Fix: "pass a directory as --home"}
	}
	if err := checkEntry(h.Dir, fi, o, false); err != nil {
		return err
	}
	return CheckDir(h.Dir, o, func(name string, fi fs.FileInfo) (bool, error) {
		switch name {
		case LogsDir:
			return false, CheckDir(filepath.Join(h.Dir, name), o, func(string, fs.FileInfo) (bool, error) {
				return true, nil // a node's log is PostgreSQL's
			})
		case ClustersDir:
			return false, CheckDir(filepath.Join(h.Dir, name), o, func(cname string, fi fs.FileInfo) (bool, error) {
				if !fi.IsDir() {
					return false, nil
				}
				return false, CheckDir(filepath.Join(h.Dir, name, cname), o, func(_ string, fi fs.FileInfo) (bool, error) {
					return fi.IsDir(), nil // a node's data directory is PostgreSQL's
				})
			})
		}
		return false, nil
	})
}

// CheckDir refuses dir, or an entry of it, that someone other than o.UID
// could have written or replaced (CheckHome's rules: no symbolic link,
// nothing writable by group or others, owned by o.UID); entry judges each
// entry further and tells whether o.DataUID may own it.
func CheckDir(dir string, o Owners, entry func(name string, fi fs.FileInfo) (dataMayOwn bool, err error)) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check home: %w", err)
	}
	if err := checkEntry(dir, fi, o, false); err != nil {
		return err
	}
	if !fi.IsDir() {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("check home: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile (a temporary file)
		}
		if err != nil {
			return fmt.Errorf("check home: %w", err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return &UntrustedError{Path: path, Problem: "is a symbolic link, which socnet does not follow in its home",
				Fix: "remove it: rm " + path}
		}
		dataMayOwn, err := entry(e.Name(), fi)
		if err != nil {
			return err
		}
		if err := checkEntry(path, fi, o, dataMayOwn); err != nil {
			return err
		}
	}
	return nil
}

// checkEntry checks one entry's owner and mode.
func checkEntry(path string, fi fs.FileInfo, o Owners, dataMayOwn bool) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return &UntrustedError{Path: path, Problem: "is a symbolic link, which socnet does not follow in its home",
			Fix: "remove it: rm " + path}
	}
	uid := ownerOf(fi)
	if uid != o.UID && !(dataMayOwn && o.DataUID >= 0 && uid == o.DataUID) {
		return &UntrustedError{Path: path,
			Problem: fmt.Sprintf("is owned by %s, not by %s who runs socnet", userName(uid), userName(o.UID)),
			Fix:     fmt.Sprintf("if you trust its content run chown %s %s, else remove it", userName(o.UID), path)}
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return &UntrustedError{Path: path,
			Problem: fmt.Sprintf("is writable by group or others (mode %#o)", perm),
			Fix:     "run chmod go-w " + path}
	}
	return nil
}

// checkParents checks dir and its ancestors up to /.
func checkParents(dir string, o Owners) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("check home: %w", err)
		}
		if uid := ownerOf(fi); uid != 0 && uid != o.UID {
			return &UntrustedError{Path: d,
				Problem: fmt.Sprintf("(a parent of the home) is owned by %s, who could replace the home", userName(uid)),
				Fix:     fmt.Sprintf("run chown %s %s, or choose a home elsewhere", userName(o.UID), d)}
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return &UntrustedError{Path: d,
				Problem: fmt.Sprintf("(a parent of the home) is writable by group or others (mode %#o)", fi.Mode().Perm()),
				Fix:     "run chmod go-w " + d}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// userName returns the name of uid, or the number when it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}
