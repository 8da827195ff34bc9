package stack

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"socnet/internal/haproxy"
)

// Health checks of the API instances by HAProxy: a check every
// ProxyCheckInterval, down after two failed checks, up after one passed.
const ProxyCheckInterval = 500 * time.Millisecond

// ProxyService is HAProxy's name in services.json and status.
const ProxyService = "haproxy"

// proxyDir holds HAProxy's config, log and stats socket.
func proxyDir(h Home) string { return filepath.Join(h.Dir, "haproxy") }

// ProxySocket is the stats socket of the HAProxy `up --hosts netns` runs.
func ProxySocket(h Home) string { return haproxy.SocketPath(proxyDir(h)) }

// apiBackends are the API instances HAProxy balances over.
func apiBackends(svcs []*service) []haproxy.Backend {
	var out []haproxy.Backend
	for _, s := range svcs {
		if s.Balanced {
			out = append(out, haproxy.Backend{Name: s.Name, Addr: s.Addr})
		}
	}
	return out
}

// runProxy runs HAProxy on bind over the backends until ctx ends,
// restarting it should it exit. The first start's outcome goes to started,
// once every backend is up (or startCtx ended); changed receives its
// record for services.json (nil once it stopped).
func runProxy(ctx, startCtx context.Context, h Home, bind string, backends []haproxy.Backend,
	log *slog.Logger, started chan<- error, changed func(*Service)) {
	// No Config.User: a process that changes its user loses its
	// parent-death signal, and HAProxy must stop with a SIGKILLed `up`.
	cfg := haproxy.Config{Bind: bind, Backends: backends, CheckInterval: ProxyCheckInterval}
	opts := haproxy.Options{Dir: proxyDir(h), Config: cfg, Logger: log,
		// From the spawner's thread (Pdeathsig), with the home's mark so
		// that the next `up` stops a leftover.
		StartChild: func(cmd *exec.Cmd) error {
			cmd.Env = append(os.Environ(), HomeEnv+"="+h.Dir)
			return StartChild(cmd)
		}}
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.Name
	}
	first := true
	restarts := 0
	for ctx.Err() == nil {
		sctx := ctx
		if first {
			sctx = startCtx
		}
		p, err := haproxy.Start(sctx, opts)
		if err == nil {
			// Recorded as soon as it answers on bind.
			changed(&Service{Name: ProxyService, Pid: p.Pid(), Addr: bind, Restarts: restarts})
		}
		if err == nil && first {
			err = p.WaitStates(startCtx, "UP", names...)
			if err != nil {
				_ = p.Stop(ServiceGrace)
				changed(nil)
			}
		}
		if first {
			started <- err
			first = false
			if err != nil {
				return
			}
		}
		if err != nil {
			log.Error("haproxy did not start; retrying", "err", err)
		} else {
			select {
			case <-ctx.Done():
				_ = p.Stop(ServiceGrace)
				changed(nil)
				return
			case <-p.Done():
				log.Warn("haproxy exited; restarting", "log", p.LogPath())
				changed(nil)
			}
		}
		restarts++
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
