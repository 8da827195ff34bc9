package patroni

import (
	"errors"
	"fmt"
	"strings"
)

// CheckSafe refuses a configuration that could acknowledge a write lost in a
// failover, or that weakens authentication. The error says why in one line.
//
// The rules, in order:
//  1. synchronous_mode must be on: otherwise an async replica may be promoted.
//  2. synchronous_mode_strict must be on: otherwise a leader without a sync
//     standby goes on acknowledging writes that only it holds.
//  3. synchronous_commit must wait for the standby's flush (on or
//     remote_apply): off, local and remote_write acknowledge before that.
//  4. no host line of pg_hba may use trust.
//  5. timing must be positive and keep TTL >= loop_wait + 2*retry_timeout,
//     the rule Patroni documents, so that a leader that cannot reach etcd
//     demotes itself before its lease ends.
//  6. data checksums must be on, so that pg_rewind and the replicas catch
//     a torn page instead of spreading it.
//
// maximum_lag_on_failover needs no rule: under synchronous mode Patroni
// promotes only a member of the sync key, whatever the lag limit.
func CheckSafe(cfg Config) error {
	d := cfg.Bootstrap.DCS
	if !d.SynchronousMode {
		return errors.New("unsafe patroni config: synchronous_mode is off, so an asynchronous replica may be promoted and acknowledged writes lost")
	}
	if !d.SynchronousModeStrict {
		return errors.New("unsafe patroni config: synchronous_mode_strict is off, so a leader without a sync standby acknowledges writes only it holds")
	}
	for _, params := range []map[string]string{d.PostgreSQL.Parameters, cfg.PostgreSQL.Parameters} {
		if v, ok := params["synchronous_commit"]; ok {
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "on", "remote_apply", "true", "yes", "1":
			default:
				return fmt.Errorf("unsafe patroni config: synchronous_commit = %s acknowledges a commit before the sync standby has flushed it", v)
			}
		}
	}
	for _, line := range cfg.PostgreSQL.PgHBA {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "host") && hbaMethod(f) == "trust" {
			return fmt.Errorf("unsafe patroni config: pg_hba line %q trusts network clients without a password", line)
		}
	}
	if d.TTL <= 0 || d.LoopWait <= 0 || d.RetryTimeout <= 0 {
		return fmt.Errorf("unsafe patroni config: ttl %d, loop_wait %d and retry_timeout %d must all be positive", d.TTL, d.LoopWait, d.RetryTimeout)
	}
	if d.TTL < d.LoopWait+2*d.RetryTimeout {
		return fmt.Errorf("unsafe patroni config: ttl %d is below loop_wait + 2*retry_timeout = %d, so the lease may end before a cut-off leader demotes itself", d.TTL, d.LoopWait+2*d.RetryTimeout)
	}
	if !hasInitDBFlag(cfg.Bootstrap.InitDB, "data-checksums") {
		return errors.New("unsafe patroni config: initdb lacks data-checksums")
	}
	return nil
}

// hbaMethod returns the auth method of a host line:
// TYPE DATABASE USER ADDRESS [MASK] METHOD [OPTIONS].
func hbaMethod(f []string) string {
	if len(f) < 5 {
		return ""
	}
	i := 4
	if !strings.Contains(f[3], "/") && len(f) > 5 && !strings.Contains(f[4], "=") {
		i = 5 // ADDRESS MASK form, or a host name followed by the method
		if isMethod(f[4]) {
			i = 4
		}
	}
	return strings.ToLower(f[i])
}

func isMethod(s string) bool {
	switch strings.ToLower(s) {
	case "trust", "reject", "md5", "password", "scram-sha-256", "gss", "sspi", "ident", "peer", "ldap", "radius", "cert", "pam", "bsd":
		return true
	}
	return false
}

// hasInitDBFlag reports whether initdb options hold flag, given as a bare
// string or as a key of a one-entry map.
func hasInitDBFlag(opts []any, flag string) bool {
	for _, o := range opts {
		switch v := o.(type) {
		case string:
			if v == flag {
				return true
			}
		case map[string]string:
			if _, ok := v[flag]; ok {
				return true
			}
		case map[string]any:
			if _, ok := v[flag]; ok {
				return true
			}
		}
	}
	return false
}
