package stack_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"socnet/internal/stack"
)

// TestCheckHome plants in a home what another local user could, and checks
// that each is refused with one line naming the path and the fix, while the
// stack's own layout (PostgreSQL's data directories and logs owned by its
// account when socnet runs as root) passes.
func TestCheckHome(t *testing.T) {
	nobody := nobodyUID(t)
	self := os.Geteuid()
	owners := stack.Owners{UID: self, DataUID: nobody} // nobody stands in for PostgreSQL's account
	tests := []struct {
		name    string
		plant   func(t *testing.T, h stack.Home)
		owners  stack.Owners
		path    string // relative to the home; "." the home itself
		problem string
		fix     string
	}{
		{name: "a clean home", plant: func(*testing.T, stack.Home) {}},
		{name: "PostgreSQL owns its data directories and logs", plant: func(t *testing.T, h stack.Home) {
			chown(t, filepath.Join(h.Clusters(), "main", "main-1"), nobody)
			chown(t, filepath.Join(h.Logs(), "main-1.log"), nobody)
		}},
		{name: "home writable by others", plant: func(t *testing.T, h stack.Home) { chmod(t, h.Dir, 0o777) },
			path: ".", problem: "writable by group or others (mode 0777)", fix: "chmod go-w"},
		{name: "home writable by group", plant: func(t *testing.T, h stack.Home) { chmod(t, h.Dir, 0o770) },
			path: ".", problem: "writable by group or others (mode 0770)", fix: "chmod go-w"},
		{name: "home owned by another user", plant: func(t *testing.T, h stack.Home) { chown(t, h.Dir, nobody) },
			path: ".", problem: "is owned by nobody", fix: "chown " + userName(t, self)},
		{name: "token key planted by another user", plant: func(t *testing.T, h stack.Home) { chown(t, h.TokenKey(), nobody) },
			path: stack.TokenKeyFile, problem: "is owned by nobody", fix: "chown " + userName(t, self)},
		{name: "stack.json planted by another user", plant: func(t *testing.T, h stack.Home) { chown(t, h.Stack(), nobody) },
			path: stack.StackFile, problem: "is owned by nobody", fix: "chown"},
		{name: "services.json writable by others", plant: func(t *testing.T, h stack.Home) { chmod(t, h.Services(), 0o666) },
			path: stack.ServicesFile, problem: "writable by group or others", fix: "chmod go-w"},
		{name: "control socket replaced by a link", plant: func(t *testing.T, h stack.Home) {
			symlink(t, filepath.Join(t.TempDir(), "their.sock"), h.Path(stack.ControlFile))
		}, path: stack.ControlFile, problem: "symbolic link", fix: "rm "},
		{name: "logs planted as a link", plant: func(t *testing.T, h stack.Home) {
			replaceWithLink(t, h.Logs())
		}, path: stack.LogsDir, problem: "symbolic link", fix: "rm "},
		{name: "clusters planted as a link", plant: func(t *testing.T, h stack.Home) {
			replaceWithLink(t, h.Clusters())
		}, path: stack.ClustersDir, problem: "symbolic link", fix: "rm "},
		{name: "a log planted as a link", plant: func(t *testing.T, h stack.Home) {
			symlink(t, "/etc/passwd", filepath.Join(h.Logs(), "api.log"))
		}, path: "logs/api.log", problem: "symbolic link", fix: "rm "},
		{name: "a cluster's state owned by PostgreSQL's account", plant: func(t *testing.T, h stack.Home) {
			chown(t, filepath.Join(h.Clusters(), "main", "state.json"), nobody)
		}, path: "clusters/main/state.json", problem: "is owned by nobody", fix: "chown"},
		{name: "a data directory owned by another user when socnet is not root", owners: stack.Owners{UID: self, DataUID: -1},
			plant: func(t *testing.T, h stack.Home) { chown(t, filepath.Join(h.Clusters(), "main", "main-1"), nobody) },
			path:  "clusters/main/main-1", problem: "is owned by nobody", fix: "chown"},
		{name: "a cluster directory writable by others", plant: func(t *testing.T, h stack.Home) {
			chmod(t, filepath.Join(h.Clusters(), "main"), 0o757)
		}, path: "clusters/main", problem: "writable by group or others", fix: "chmod go-w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHome(t)
			tt.plant(t, h)
			o := owners
			if tt.owners != (stack.Owners{}) {
				o = tt.owners
			}
			err := stack.CheckHome(h, o)
			if tt.path == "" {
				if err != nil {
					t.Fatalf("CheckHome = %v, want nil", err)
				}
				return
			}
			var ue *stack.UntrustedError
			if !errors.As(err, &ue) {
				t.Fatalf("CheckHome = %v, want an *UntrustedError", err)
			}
			want := filepath.Join(h.Dir, tt.path)
			msg := err.Error()
			if ue.Path != want || !strings.Contains(msg, tt.problem) || !strings.Contains(ue.Fix, tt.fix) || strings.Contains(msg, "\n") {
				t.Errorf("CheckHome = %q; want one line about %s that says %q and %q", msg, want, tt.problem, tt.fix)
			}
		})
	}
}

func TestCheckHomeParents(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	h := stack.Home{Dir: filepath.Join(parent, "home")}
	o := stack.Owners{UID: os.Geteuid(), DataUID: -1}
	if err := stack.CheckHome(h, o); err != nil {
		t.Fatalf("a missing home under a private parent: %v", err)
	}
	chmod(t, parent, 0o777) // anyone could rename the home away and put theirs in place
	if err := stack.CheckHome(h, o); err == nil || !strings.Contains(err.Error(), "a parent of the home") {
		t.Errorf("a parent writable by all: CheckHome = %v, want it refused", err)
	}
	chmod(t, parent, 0o1777) // sticky, as /tmp: only the owner may rename
	if err := stack.CheckHome(h, o); err != nil {
		t.Errorf("a sticky parent: %v", err)
	}
	link := filepath.Join(parent, "link")
	if err := os.Mkdir(h.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	symlink(t, h.Dir, link)
	if err := stack.CheckHome(stack.Home{Dir: link}, o); err == nil || !strings.Contains(err.Error(), "--home "+h.Dir) {
		t.Errorf("a home that is a link: CheckHome = %v, want it refused naming the directory", err)
	}
}

// newHome lays out a home as `socnet up` leaves it.
func newHome(t *testing.T) stack.Home {
	t.Helper()
	h := stack.Home{Dir: filepath.Join(t.TempDir(), "home")}
	for _, d := range []string{h.Dir, h.Logs(), filepath.Join(h.Clusters(), "main", "main-1")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{h.TokenKey(), h.Stack(), h.Services(), h.Secrets(),
		filepath.Join(h.Logs(), "main-1.log"), filepath.Join(h.Clusters(), "main", "state.json")} {
		if err := os.WriteFile(f, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func replaceWithLink(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	symlink(t, t.TempDir(), dir)
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if mode&0o1000 != 0 {
		mode = mode&0o777 | os.ModeSticky
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}

// nobodyUID is the user that stands for another local user; handing files
// to it needs root.
func nobodyUID(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("planting files owned by another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("look up nobody: %v", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

func userName(t *testing.T, uid int) string {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return strconv.Itoa(uid)
	}
	return u.Username
}
