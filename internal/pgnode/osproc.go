package pgnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"socnet/internal/netns"
)

// FindBinDir returns the directory of the PostgreSQL server programs: the one
// holding `postgres` on PATH (symlinks resolved, so that initdb and the other
// programs sit next to it), else the highest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, err := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if err != nil {
		return "", fmt.Errorf("find postgresql binaries: %w", err)
	}
	if len(matches) == 0 {
		return "", errors.New("find postgresql binaries: no postgres on PATH and none in /usr/lib/postgresql/*/bin")
	}
	sort.Slice(matches, func(i, j int) bool {
		return versionLess(versionOf(matches[i]), versionOf(matches[j]))
	})
	return filepath.Dir(matches[len(matches)-1]), nil
}

// versionOf returns the numeric parts of the version directory in
// /usr/lib/postgresql/VERSION/bin/postgres.
func versionOf(path string) []int {
	v := filepath.Base(filepath.Dir(filepath.Dir(path)))
	var parts []int
	for _, s := range strings.Split(v, ".") {
		n, err := strconv.Atoi(s)
		if err != nil {
			n = -1
		}
		parts = append(parts, n)
	}
	return parts
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// OSUser returns "postgres" when the process runs as root (PostgreSQL refuses
// root), "" otherwise.
func OSUser() string {
	if os.Geteuid() == 0 {
		return "postgres"
	}
	return ""
}

// Account is the OS identity the PostgreSQL programs (and other servers
// that must not run as root, such as Patroni) run as. A nil *Account means
// the current user.
type Account struct {
	uid, gid int
	home     string
	cred     *syscall.Credential
}

// lookupAccount resolves name; it returns nil when name is empty or is the
// current user, because no switch is needed then.
func lookupAccount(name string) (*Account, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up os user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("os user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("os user %q: gid %q: %w", name, u.Gid, err)
	}
	if uid == os.Geteuid() {
		return nil, nil
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil {
				groups = append(groups, uint32(g))
			}
		}
	}
	return &Account{
		uid:  uid,
		gid:  gid,
		home: u.HomeDir,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups},
	}, nil
}

// LookupAccount resolves the OS user name; it returns nil when name is empty
// or is the current user, because no switch is needed then.
func LookupAccount(name string) (*Account, error) { return lookupAccount(name) }

// Credential is what exec.Cmd's SysProcAttr needs to run as a (nil: as the
// current user).
func (a *Account) Credential() *syscall.Credential {
	if a == nil {
		return nil
	}
	return a.cred
}

// Home is the account's home directory ("" for the current user).
func (a *Account) Home() string {
	if a == nil {
		return ""
	}
	return a.home
}

// ChownAll hands path and everything below it to acct (nil: nothing to do).
func ChownAll(path string, acct *Account) error { return chownAll(path, acct) }

// chownAll hands path and everything below it to acct.
func chownAll(path string, acct *Account) error {
	if acct == nil {
		return nil
	}
	err := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file PostgreSQL removed meanwhile
			}
			return err
		}
		if err := os.Lchown(p, acct.uid, acct.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// chownFile hands one file to acct.
func chownFile(path string, acct *Account) error {
	if acct == nil {
		return nil
	}
	if err := os.Chown(path, acct.uid, acct.gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// MakeParentsTraversable adds search permission for group and others to
// every ancestor of path that lacks it, so that acct can reach path (nil:
// nothing to do). Nothing becomes listable or writable.
func MakeParentsTraversable(path string, acct *Account) error {
	return makeParentsTraversable(path, acct)
}

// makeParentsTraversable adds search permission for group and others to every
// ancestor of path that lacks it, so that acct can reach path (t.TempDir and
// os.MkdirTemp create 0700 directories). Nothing becomes listable or writable.
func makeParentsTraversable(path string, acct *Account) error {
	if acct == nil {
		return nil
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("make %s traversable: %w", d, err)
		}
		if perm := fi.Mode().Perm(); perm&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid)|0o011); err != nil {
				return fmt.Errorf("make %s traversable: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// childEnv is the environment of a PostgreSQL program: the current one
// without PG* variables (which would silently change what the programs
// connect to), with HOME pointing at acct's home, plus extra.
func childEnv(acct *Account, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || (acct != nil && strings.HasPrefix(kv, "HOME=")) {
			continue
		}
		env = append(env, kv)
	}
	if acct != nil && acct.home != "" {
		env = append(env, "HOME="+acct.home)
	}
	return append(env, extra...)
}

// command prepares bin with args to run as acct, inside the network
// namespace ns when ns is not empty; the caller adds to its SysProcAttr.
// Entering a namespace needs root, so there the command is
// `ip netns exec NS setpriv --reuid U --regid G --groups ... --pdeathsig keep -- BIN ARGS`:
// each program executes the next in its own place, so the Cmd's process ends
// up being bin, and setpriv restores the parent-death signal that the
// change of user clears.
func command(ctx context.Context, acct *Account, ns, bin string, args ...string) *exec.Cmd {
	if ns == "" {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{}
		if acct != nil {
			cmd.SysProcAttr.Credential = acct.cred
		}
		return cmd
	}
	var argv []string
	if acct != nil {
		groups := "--clear-groups"
		if len(acct.cred.Groups) > 0 {
			ids := make([]string, len(acct.cred.Groups))
			for i, g := range acct.cred.Groups {
				ids[i] = strconv.FormatUint(uint64(g), 10)
			}
			groups = "--groups=" + strings.Join(ids, ",")
		}
		argv = append(argv, "setpriv",
			"--reuid="+strconv.Itoa(acct.uid), "--regid="+strconv.Itoa(acct.gid), groups,
			"--pdeathsig=keep", "--")
	}
	argv = append(argv, bin)
	cmd := netns.Exec(ctx, ns, argv[0], append(argv[1:], args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	return cmd
}

// runProgram runs a short-lived PostgreSQL program as acct (in the network
// namespace ns, if not empty) with its output going to out, and returns its
// output. The program runs in its own process group, which is killed when
// ctx ends.
func runProgram(ctx context.Context, acct *Account, ns string, out *lineWriter, env []string, bin string, args ...string) ([]byte, error) {
	captured := &capture{}
	if out != nil {
		captured.out = out // not a typed nil in the interface
	}
	cmd := command(ctx, acct, ns, bin, args...)
	cmd.Dir = "/"
	cmd.Env = env
	cmd.Stdout = captured
	cmd.Stderr = captured
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	output := captured.bytes()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return output, fmt.Errorf("%s: %w%s", filepath.Base(bin), err, quoteTail(lastLines(string(output), tailLines)))
	}
	return output, nil
}

// capture keeps a program's output and copies it to a log. It is one
// pointer, so exec.Cmd shares one pipe for stdout and stderr.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer // may be nil
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.out != nil {
		_, _ = c.out.Write(p) // a broken log must not fail the program
	}
	return len(p), nil
}

func (c *capture) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// procEntry identifies a process across pid reuse.
type procEntry struct {
	pid   int
	start string // starttime from /proc/PID/stat
}

// procStat returns the state, parent pid and start time of pid.
func procStat(pid int) (state byte, ppid int, start string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, "", err
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, "", fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return f[0][0], ppid, f[19], nil
}

// childrenOf lists the live child processes of pid.
func childrenOf(pid int) []procEntry {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []procEntry
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, start, err := procStat(p)
		if err != nil || ppid != pid || state == 'Z' || state == 'X' {
			continue
		}
		kids = append(kids, procEntry{pid: p, start: start})
	}
	return kids
}

// gone reports whether the process has exited (a zombie counts as exited: it
// holds no memory, files or shared memory any more).
func (p procEntry) gone() bool {
	state, _, start, err := procStat(p.pid)
	return err != nil || state == 'Z' || state == 'X' || start != p.start
}

// processAlive reports whether pid names a live process.
func processAlive(pid int) bool {
	state, _, _, err := procStat(pid)
	return err == nil && state != 'Z' && state != 'X'
}

// processIsPostgres reports whether pid runs the postgres executable.
func processIsPostgres(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err == nil {
		return strings.HasSuffix(strings.TrimSuffix(exe, " (deleted)"), "/postgres")
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte("postgres"))
}

// RunningPostmaster returns the pid that dataDir/postmaster.pid names when
// that process is alive (not a zombie), runs postgres and works in dataDir,
// else 0. A lock file left by a killed server may name a pid the kernel has
// since given to another process, PostgreSQL of another cluster included:
// the working-directory check keeps it from being taken for, and signalled
// as, this directory's server. It finds servers whatever process started
// them (another socnet process, or Patroni).
func RunningPostmaster(dataDir string) int {
	pid, err := readPidFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil || pid <= 0 || !processAlive(pid) || !processIsPostgres(pid) {
		return 0
	}
	want, err := os.Stat(dataDir)
	if err != nil {
		return 0
	}
	got, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil || !os.SameFile(want, got) {
		return 0
	}
	return pid
}
