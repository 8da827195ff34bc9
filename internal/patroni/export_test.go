package patroni

import (
	"context"
	"log/slog"
	"os"
	"time"

	"socnet/internal/pgnode"
)

// Hold keeps node's agent from being restarted by Supervise while held is
// true: a host that stays lost.
func (e *Engine) Hold(node string, held bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.agents[node].held = held
}

// TLSMember is an etcd member that needs a certificate.
type TLSMember = tlsMember

// EnsureTLS is ensureTLS on dir for the agents' OS user osUser.
func EnsureTLS(dir string, members []TLSMember, osUser string, now time.Time) error {
	acct, err := pgnode.LookupAccount(osUser)
	if err != nil {
		return err
	}
	return ensureTLS(slog.New(slog.DiscardHandler), tlsDir(dir), members, acct, now)
}

// EtcdMemberTLS are the files of etcd member name in dir, as ensureTLS
// makes them.
func EtcdMemberTLS(dir, name string) *EtcdTLS { return tlsDir(dir).member(name) }

// EtcdTLSOn reports whether the engine runs etcd with mutual TLS.
func (e *Engine) EtcdTLSOn() bool { return e.etcdTLS }

// AgentConfig is node's Patroni configuration as the engine writes it.
func (e *Engine) AgentConfig(node string) Config { return e.agents[node].cfg }

// EtcdMembers are the engine's etcd members.
func (e *Engine) EtcdMembers() []EtcdSpec { return e.etcd }

// StartEtcdOnly does what Up does for etcd alone: its certificates, then
// its members; Stop stops them.
func (e *Engine) StartEtcdOnly(ctx context.Context) error {
	for _, d := range []string{e.dir, e.cfg.Home.Logs()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := saveState(e.dir, e.st); err != nil {
		return err
	}
	if err := e.prepareEtcdTLS(); err != nil {
		return err
	}
	return e.startEtcd(ctx)
}
