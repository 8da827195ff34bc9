package patroni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"socnet/internal/stack"
)

// EtcdLeaderHost returns the host (etcd-1, etcd-2 or etcd-3) of the etcd
// member that leads the Patroni engine's etcd in home h, as each member's
// /v3/maintenance/status says; addr gives a host's address (the stack's
// netns.Net). It fails while no member answers as the leader (an election).
func EtcdLeaderHost(ctx context.Context, h stack.Home, addr func(host string) (netip.Addr, bool)) (string, error) {
	port, err := EtcdClientPort(h)
	if err != nil {
		return "", fmt.Errorf("etcd leader: %w", err)
	}
	hc, scheme, err := EtcdHTTPClient(h)
	if err != nil {
		return "", fmt.Errorf("etcd leader: %w", err)
	}
	var errs []error
	for _, host := range etcdHosts {
		a, ok := addr(host)
		if !ok {
			return "", fmt.Errorf("etcd leader: the stack has no host %s (is it running with --hosts netns?)", host)
		}
		url := scheme + "://" + net.JoinHostPort(a.String(), strconv.Itoa(port)) + "/v3/maintenance/status"
		leads, err := etcdMemberLeads(ctx, hc, url)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", host, err))
			continue
		}
		if leads {
			return host, nil
		}
	}
	return "", fmt.Errorf("etcd leader: no member answers as the leader: %w", errors.Join(errs...))
}

// EtcdClientPort is the client port of the etcd members of the Patroni
// engine's home h (every member listens on it, each on its own host), as the
// home's state records it.
func EtcdClientPort(h stack.Home) (int, error) {
	path := filepath.Join(h.Path(homeDirName), stateFileName)
	b, err := stack.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var st engineState
	if err := json.Unmarshal(b, &st); err != nil || st.EtcdClientPort == 0 {
		return 0, fmt.Errorf("%s names no etcd client port (%v)", path, err)
	}
	return st.EtcdClientPort, nil
}

// etcdMemberLeads asks one member's status endpoint whether it leads.
func etcdMemberLeads(ctx context.Context, hc *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	var ms struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		return false, err
	}
	return ms.Leader != "" && ms.Leader == ms.Header.MemberID, nil
}
