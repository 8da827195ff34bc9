package pgnode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Promote runs SELECT pg_promote(true, 60) and waits until
// pg_is_in_recovery() is false. Promoting a primary is a no-op.
func (n *Node) Promote(ctx context.Context) error {
	if err := n.promote(ctx); err != nil {
		return fmt.Errorf("promote %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) promote(ctx context.Context) error {
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	inRecovery, err := isInRecovery(ctx, conn)
	if err != nil {
		return err
	}
	if !inRecovery {
		return nil
	}
	var promoted bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&promoted); err != nil {
		return fmt.Errorf("pg_promote: %w", err)
	}
	if !promoted {
		return errors.New("pg_promote: not promoted within 60 s")
	}
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		inRecovery, err := isInRecovery(ctx, conn)
		if err != nil {
			return err
		}
		if !inRecovery {
			n.log.Info("promoted")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still in recovery: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// connect opens an admin connection to the node's postgres database.
func (n *Node) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, n.DSN(""))
	if err != nil {
		return nil, errors.New("connect: " + Redact(err.Error()))
	}
	return conn, nil
}

func isInRecovery(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var in bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in); err != nil {
		return false, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	return in, nil
}

// BaseBackup fills the empty DataDir from a running primary with
// pg_basebackup --wal-method=stream --write-recovery-conf --checkpoint=fast
// using the replication conninfo (which carries user, password and
// application_name), with --slot=slot when slot != "" (the caller creates
// the slot on the primary first). The password reaches pg_basebackup through
// its environment, not its command line. Afterwards primary_conninfo is the
// given conninfo, primary_slot_name the slot, and the node's own settings
// replace the primary's. On failure DataDir is left empty.
func (n *Node) BaseBackup(ctx context.Context, primaryConnInfo, slot string) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.baseBackup(ctx, primaryConnInfo, slot); err != nil {
		return fmt.Errorf("base backup %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) baseBackup(ctx context.Context, primaryConnInfo, slot string) error {
	if err := n.validate(); err != nil {
		return err
	}
	if n.Running() {
		return errors.New("node is running")
	}
	if n.Exists() {
		return fmt.Errorf("%s already holds a cluster", n.cfg.DataDir)
	}
	conn, password, err := splitPassword(primaryConnInfo)
	if err != nil {
		return err
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	created, err := prepareEmptyDir(n.cfg.DataDir, acct)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		cleanDir(n.cfg.DataDir, created)
		return err
	}
	args := []string{
		"-D", n.cfg.DataDir,
		"-d", conn,
		"--wal-method=stream",
		"--write-recovery-conf",
		"--checkpoint=fast",
		"--no-password",
	}
	if slot != "" {
		args = append(args, "--slot="+slot)
	}
	if _, err := n.runProgram(ctx, acct, childEnv(acct, "PGPASSWORD="+password), "pg_basebackup", args...); err != nil {
		return fail(err)
	}
	if err := n.writeConfig(acct, false); err != nil {
		return fail(err)
	}
	if err := n.setRecoveryConf(primaryConnInfo, slot, acct); err != nil {
		return fail(err)
	}
	n.log.Info("base backup done", "slot", slot)
	return nil
}

// Rewind runs pg_rewind --target-pgdata=DataDir --source-server=sourceDSN
// (the node must be stopped). pg_rewind requires a cleanly shut down target:
// after a crash Rewind first finishes crash recovery in single-user mode
// (without standby.signal, which single-user mode refuses; Follow writes it
// again). A standby that crashed is refused (rebuild it with BaseBackup):
// crash recovery would give it WAL of its own. It issues a CHECKPOINT on the
// source first, so that a just promoted source has its new timeline in its
// control file. Afterwards the node's own settings replace the source's.
func (n *Node) Rewind(ctx context.Context, sourceDSN string) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.rewind(ctx, sourceDSN); err != nil {
		return fmt.Errorf("rewind %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) rewind(ctx context.Context, sourceDSN string) error {
	if n.Running() {
		return errors.New("node is running")
	}
	if !n.Exists() {
		return fmt.Errorf("no cluster in %s", n.cfg.DataDir)
	}
	source, password, err := splitPassword(sourceDSN)
	if err != nil {
		return err
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	if err := makeParentsTraversable(n.cfg.DataDir, acct); err != nil {
		return err
	}
	if err := chownAll(n.cfg.DataDir, acct); err != nil {
		return err
	}
	if err := checkpoint(ctx, sourceDSN); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	state, err := n.clusterState(ctx, acct)
	if err != nil {
		return err
	}
	switch state {
	case "shut down", "shut down in recovery":
	case "in archive recovery":
		// Crash recovery would end a standby's recovery as a primary's:
		// its checkpoints are new WAL on the timeline it shares with its
		// primary, a divergence pg_rewind does not see ("no rewind
		// required"), after which the standby cannot stream.
		return errors.New("the node stopped in archive recovery (a standby that crashed or did not start): it cannot be rewound")
	default:
		n.log.Info("finishing crash recovery before rewind", "state", state)
		if err := n.singleUserRecovery(ctx, acct); err != nil {
			return err
		}
	}
	if _, err := n.runProgram(ctx, acct, childEnv(acct, "PGPASSWORD="+password), "pg_rewind",
		"--target-pgdata="+n.cfg.DataDir,
		"--source-server="+source,
	); err != nil {
		return err
	}
	if err := n.writeConfig(acct, false); err != nil {
		return err
	}
	n.log.Info("rewound")
	return nil
}

// Reaches reports whether the node's host reaches a server at host:port
// (pg_isready, at most 3 s): nil when it answers, even with a refusal of
// connections. Without Netns the node's host is this machine, which socnet
// itself reaches, and Reaches returns nil without asking.
func (n *Node) Reaches(ctx context.Context, host string, port int) error {
	if n.cfg.Netns == "" {
		return nil
	}
	bin, err := n.bin("pg_isready")
	if err != nil {
		return err
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	// pg_isready exits 0 (accepting), 1 (rejecting, e.g. starting up),
	// 2 (no response) or 3 (bad parameters).
	_, err = runProgram(ctx, acct, n.cfg.Netns, nil, childEnv(acct), bin,
		"-h", host, "-p", strconv.Itoa(port), "-t", "3", "-q")
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s does not reach %s: %w", n.cfg.Name, net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	return nil
}

// checkpoint runs CHECKPOINT on the server at dsn.
func checkpoint(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return errors.New("connect: " + Redact(err.Error()))
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// clusterState returns pg_controldata's "Database cluster state".
func (n *Node) clusterState(ctx context.Context, acct *Account) (string, error) {
	bin, err := n.bin("pg_controldata")
	if err != nil {
		return "", err
	}
	out, err := runProgram(ctx, acct, "", nil, childEnv(acct, "LC_ALL=C"), bin, "-D", n.cfg.DataDir)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "Database cluster state" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("pg_controldata: no cluster state in its output")
}

// singleUserRecovery runs the server in single-user mode with no input: it
// replays WAL up to the end, writes a shutdown checkpoint and exits.
func (n *Node) singleUserRecovery(ctx context.Context, acct *Account) error {
	for _, f := range []string{"standby.signal", "recovery.signal"} {
		if err := os.Remove(filepath.Join(n.cfg.DataDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	// The checkpoints of recovery must not remove WAL: pg_rewind reads the
	// target's WAL back to the last checkpoint before the divergence.
	if _, err := n.runProgram(ctx, acct, nil, "postgres", "--single", "-D", n.cfg.DataDir,
		"-c", "wal_keep_size="+strconv.Itoa(math.MaxInt32), "postgres"); err != nil {
		return fmt.Errorf("crash recovery: %w", err)
	}
	state, err := n.clusterState(ctx, acct)
	if err != nil {
		return err
	}
	if state != "shut down" {
		return fmt.Errorf("crash recovery: cluster state %q after single-user mode", state)
	}
	return nil
}

// Follow makes the node a standby of a primary: writes standby.signal and
// sets primary_conninfo and primary_slot_name (slot "" clears it) in
// postgresql.auto.conf. It works stopped; when the node runs it uses ALTER
// SYSTEM and a reload, which re-points a running standby; a running primary
// becomes a standby at its next start.
func (n *Node) Follow(ctx context.Context, primaryConnInfo, slot string) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.follow(ctx, primaryConnInfo, slot); err != nil {
		return fmt.Errorf("follow %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) follow(ctx context.Context, primaryConnInfo, slot string) error {
	if _, _, err := splitPassword(primaryConnInfo); err != nil {
		return err
	}
	if strings.ContainsAny(primaryConnInfo+slot, "\n\r\x00") {
		return errors.New("conninfo or slot contains a line break or NUL")
	}
	if !n.Exists() {
		return fmt.Errorf("no cluster in %s", n.cfg.DataDir)
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	if n.Running() {
		if err := n.alterRecoveryConf(ctx, primaryConnInfo, slot); err != nil {
			return err
		}
	} else if err := n.setRecoveryConf(primaryConnInfo, slot, acct); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(n.cfg.DataDir, "standby.signal"), "", acct); err != nil {
		return err
	}
	n.log.Info("following", "slot", slot)
	return nil
}

// alterRecoveryConf sets the recovery parameters of a running node.
func (n *Node) alterRecoveryConf(ctx context.Context, primaryConnInfo, slot string) error {
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	stmts := []string{
		"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(primaryConnInfo),
		"ALTER SYSTEM SET primary_slot_name = " + quoteLiteral(slot),
		"SELECT pg_reload_conf()",
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			// The statement carries the password: name the step only.
			return fmt.Errorf("set recovery parameters: %s", Redact(err.Error()))
		}
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal
// (standard_conforming_strings is on).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// setRecoveryConf sets primary_conninfo and primary_slot_name in the
// postgresql.auto.conf of a stopped node.
func (n *Node) setRecoveryConf(primaryConnInfo, slot string, acct *Account) error {
	path := filepath.Join(n.cfg.DataDir, "postgresql.auto.conf")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read postgresql.auto.conf: %w", err)
	}
	conf := setConfValues(string(old), [][2]string{
		{"primary_conninfo", primaryConnInfo},
		{"primary_slot_name", slot},
	})
	return writeFile(path, conf, acct)
}

// setConfValues returns conf with each parameter set to its value: the first
// line setting it is replaced, later ones dropped, a missing one appended.
func setConfValues(conf string, values [][2]string) string {
	done := make(map[string]bool)
	want := make(map[string]string)
	for _, kv := range values {
		want[kv[0]] = kv[1]
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(conf, "\n"), "\n") {
		key, _, ok := strings.Cut(line, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if v, set := want[key]; ok && set && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			if !done[key] {
				out = append(out, key+" = "+quoteConf(v))
				done[key] = true
			}
			continue
		}
		if line != "" || len(out) > 0 {
			out = append(out, line)
		}
	}
	for _, kv := range values {
		if !done[kv[0]] {
			out = append(out, kv[0]+" = "+quoteConf(kv[1]))
		}
	}
	return strings.Join(out, "\n") + "\n"
}
