package pgnode

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// nodeConfFile is the file, included from postgresql.conf, that holds the
// node's own settings. It is rewritten after InitDB, BaseBackup and Rewind,
// because the latter two copy the source's configuration files.
const nodeConfFile = "socnet.conf"

// includeLine is appended to postgresql.conf once.
const includeLine = "include_if_exists = '" + nodeConfFile + "'"

// hbaConf allows password (SCRAM) logins over TCP from this machine only: no
// trust, no Unix sockets, nothing from other hosts.
const hbaConf = `# Written by socnet. Password (SCRAM) logins over TCP from this machine only.
# TYPE  DATABASE     USER  ADDRESS       METHOD
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
`

// hbaConfFrom allows password (SCRAM) logins over TCP from the network
// clientNet only, for all databases and for replication.
func hbaConfFrom(clientNet netip.Prefix) string {
	return fmt.Sprintf(`# Written by socnet. Password (SCRAM) logins over TCP from %[1]s only.
# TYPE  DATABASE     USER  ADDRESS  METHOD
host    all          all   %[1]s  scram-sha-256
host    replication  all   %[1]s  scram-sha-256
`, clientNet)
}

// hba renders the node's pg_hba.conf.
func (n *Node) hba() (string, error) {
	if n.cfg.ClientNet == "" {
		return hbaConf, nil
	}
	p, err := parseClientNet(n.cfg.ClientNet)
	if err != nil {
		return "", err
	}
	return hbaConfFrom(p), nil
}

// parseClientNet accepts a network in CIDR notation without host bits.
func parseClientNet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("client network %q: %w", s, err)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("client network %q has host bits set (want %s)", s, p.Masked())
	}
	return p, nil
}

// settingName is what a postgresql.conf parameter name may look like
// (extension parameters carry a dot).
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// validate checks the parts of the configuration InitDB and Start rely on.
func (n *Node) validate() error {
	if n.cfg.DataDir == "" {
		return errors.New("no data directory configured")
	}
	if n.cfg.Port <= 0 || n.cfg.Port > 65535 {
		return fmt.Errorf("invalid port %d", n.cfg.Port)
	}
	if n.cfg.ClientNet != "" {
		if _, err := parseClientNet(n.cfg.ClientNet); err != nil {
			return err
		}
	}
	if strings.ContainsAny(n.cfg.Netns, " \t\n\r\x00/") {
		return fmt.Errorf("network namespace %q: not a name", n.cfg.Netns)
	}
	if strings.ContainsAny(n.cfg.Password, "\n\r\x00") {
		return errors.New("password contains a line break or NUL")
	}
	for k, v := range n.cfg.Settings {
		if !settingName.MatchString(k) {
			return fmt.Errorf("invalid setting name %q", k)
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			return fmt.Errorf("setting %s: value contains a line break or NUL", k)
		}
	}
	return nil
}

// InitDB creates the data directory (initdb --data-checksums,
// scram-sha-256, the superuser with the password via --pwfile), writes the
// settings and a pg_hba.conf that allows only 127.0.0.1/32 (and ::1), or
// only ClientNet when set, with scram-sha-256 for all databases and for
// replication, no trust over the network. Chowns the data dir to OSUser and
// makes its parents traversable. Refuses if DataDir already holds a cluster.
func (n *Node) InitDB(ctx context.Context) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.initDB(ctx); err != nil {
		return fmt.Errorf("initdb %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) initDB(ctx context.Context) error {
	if err := n.validate(); err != nil {
		return err
	}
	if n.Exists() {
		return fmt.Errorf("%s already holds a cluster", n.cfg.DataDir)
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	created, err := prepareEmptyDir(n.cfg.DataDir, acct)
	if err != nil {
		return err
	}
	if err := n.runInitDB(ctx, acct); err != nil {
		cleanDir(n.cfg.DataDir, created)
		return err
	}
	if err := n.writeConfig(acct, true); err != nil {
		cleanDir(n.cfg.DataDir, created)
		return err
	}
	n.log.Info("cluster initialised", "data_dir", n.cfg.DataDir)
	return nil
}

func (n *Node) runInitDB(ctx context.Context, acct *Account) error {
	// The password file must be readable by the OS user only; it sits next
	// to the data directory, which initdb wants empty.
	pw, err := os.CreateTemp(filepath.Dir(n.cfg.DataDir), ".pgnode-pw-*")
	if err != nil {
		return fmt.Errorf("password file: %w", err)
	}
	defer os.Remove(pw.Name())
	_, werr := pw.WriteString(n.cfg.Password + "\n")
	if cerr := pw.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("password file: %w", werr)
	}
	if err := chownFile(pw.Name(), acct); err != nil {
		return err
	}
	_, err = n.runProgram(ctx, acct, nil, "initdb",
		"-D", n.cfg.DataDir,
		"-U", n.cfg.Superuser,
		"--pwfile="+pw.Name(),
		"--auth=scram-sha-256",
		"--data-checksums",
		"--encoding=UTF8",
		"--locale=C.UTF-8",
	)
	return err
}

// prepareEmptyDir makes sure dir exists, is empty, has mode 0700, belongs to
// acct and can be reached by it. created reports whether dir was made here.
func prepareEmptyDir(dir string, acct *Account) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("create %s: %w", dir, err)
		}
		created = true
	case err != nil:
		return false, fmt.Errorf("read %s: %w", dir, err)
	case len(entries) > 0:
		return false, fmt.Errorf("%s is not empty", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return created, fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := chownFile(dir, acct); err != nil {
		return created, err
	}
	if err := makeParentsTraversable(dir, acct); err != nil {
		return created, err
	}
	return created, nil
}

// cleanDir undoes a failed fill of dir: it removes dir when it was created
// for the fill, its contents otherwise.
func cleanDir(dir string, created bool) {
	if created {
		_ = os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// writeConfig writes the node's settings file, makes postgresql.conf include
// it, writes pg_hba.conf when hba is set, and hands the data directory to
// acct.
func (n *Node) writeConfig(acct *Account, hba bool) error {
	dir := n.cfg.DataDir
	if err := writeFile(filepath.Join(dir, nodeConfFile), n.nodeConf(), acct); err != nil {
		return err
	}
	confPath := filepath.Join(dir, "postgresql.conf")
	conf, err := os.ReadFile(confPath)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	if !strings.Contains(string(conf), includeLine) {
		add := "\n# The node's own settings, written by socnet.\n" + includeLine + "\n"
		if err := appendFile(confPath, add); err != nil {
			return err
		}
	}
	if hba {
		text, err := n.hba()
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, "pg_hba.conf"), text, acct); err != nil {
			return err
		}
	}
	return chownAll(dir, acct)
}

// nodeConf renders the node's settings file.
func (n *Node) nodeConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Settings of node %s, written by socnet; rewritten after initdb, base backup and rewind.\n", n.cfg.Name)
	base := [][2]string{
		{"listen_addresses", n.cfg.Host},
		{"port", strconv.Itoa(n.cfg.Port)},
		// Everything connects over TCP; socket paths under temporary
		// directories would exceed the 107-byte limit anyway.
		{"unix_socket_directories", ""},
		// The postmaster's stderr is the node's log.
		{"logging_collector", "off"},
		{"password_encryption", "scram-sha-256"},
	}
	for _, kv := range base {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], quoteConf(kv[1]))
	}
	keys := make([]string, 0, len(n.cfg.Settings))
	for k := range n.cfg.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(n.cfg.Settings[k]))
	}
	return b.String()
}

// quoteConf quotes a postgresql.conf value.
func quoteConf(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// writeFile replaces path with content (mode 0600, owned by acct) through a
// rename, so that a crash leaves the old or the new file, never half of one.
func writeFile(path, content string, acct *Account) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := chownFile(tmp, acct); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// appendFile appends s to the existing file path.
func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}
