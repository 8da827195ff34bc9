package patroni_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/patroni"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/pki"
	"socnet/internal/stack"
)

// TestEnsureTLS checks the files of etcd's mutual TLS: made once with
// their modes and owners, reused, issued again only when they no longer
// fit, and refused when someone else could have written them.
func TestEnsureTLS(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "tls")
	members := []patroni.TLSMember{{Name: "etcd-1", Addr: "10.77.3.4"}, {Name: "etcd-2", Addr: "10.77.3.5"}}
	osUser := pgnode.OSUser()
	acct, err := pgnode.LookupAccount(osUser)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := patroni.EnsureTLS(dir, members, osUser, now); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	wantDir := fs.FileMode(0o700)
	if acct != nil {
		wantDir = 0o711 // the agents' account reaches client.key, lists nothing
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != wantDir {
		t.Errorf("%s: %v %v, want mode %#o", dir, fi.Mode(), err, wantDir)
	}
	wantFiles := map[string]fs.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "etcd-1.crt": 0o644, "etcd-1.key": 0o600,
		"etcd-2.crt": 0o644, "etcd-2.key": 0o600, "client.crt": 0o644, "client.key": 0o600}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(wantFiles) {
		t.Errorf("%d files in %s, want %d", len(entries), dir, len(wantFiles))
	}
	for name, mode := range wantFiles {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
		owner := os.Geteuid()
		if name == "client.key" && acct != nil {
			owner = int(acct.Credential().Uid)
		}
		if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != owner {
			t.Errorf("%s: owner %d, want %d", name, uid, owner)
		}
	}
	ca, err := pki.ParseCertPEM(read("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, m := range members {
		c, err := pki.ParseCertPEM(read(m.Name + ".crt"))
		if err != nil {
			t.Fatal(err)
		}
		// A member is a server to clients and peers and a client of its peers.
		for _, ku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{ku}}); err != nil {
				t.Errorf("%s for %v: %v", m.Name, ku, err)
			}
		}
		for _, host := range []string{m.Addr, "127.0.0.1"} {
			if err := c.VerifyHostname(host); err != nil {
				t.Errorf("%s: %v", m.Name, err)
			}
		}
	}
	client, err := pki.ParseCertPEM(read("client.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the client certificate serves as a server's")
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")); err != nil {
		t.Errorf("client pair: %v", err)
	}

	t.Run("reused", func(t *testing.T) {
		before := map[string][]byte{}
		for name := range wantFiles {
			before[name] = read(name)
		}
		if err := patroni.EnsureTLS(dir, members, osUser, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		for name := range wantFiles {
			if !bytes.Equal(before[name], read(name)) {
				t.Errorf("%s changed on a second start", name)
			}
		}
	})
	t.Run("issued again when the address changes", func(t *testing.T) {
		caBefore, oneBefore, twoBefore := read("ca.crt"), read("etcd-1.crt"), read("etcd-2.crt")
		moved := []patroni.TLSMember{members[0], {Name: "etcd-2", Addr: "10.77.9.5"}}
		if err := patroni.EnsureTLS(dir, moved, osUser, now); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(caBefore, read("ca.crt")) || !bytes.Equal(oneBefore, read("etcd-1.crt")) {
			t.Error("the CA or etcd-1's certificate changed when only etcd-2 moved")
		}
		c, err := pki.ParseCertPEM(read("etcd-2.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(twoBefore, read("etcd-2.crt")) || c.VerifyHostname("10.77.9.5") != nil {
			t.Error("etcd-2's certificate lacks its new address")
		}
	})
	t.Run("refused when writable by others", func(t *testing.T) {
		p := filepath.Join(dir, "etcd-1.crt")
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(p, 0o644)
		var ue *stack.UntrustedError
		err := patroni.EnsureTLS(dir, members, osUser, now)
		if !errors.As(err, &ue) || ue.Path != p {
			t.Errorf("EnsureTLS with %s mode 0666: %v, want an UntrustedError naming it", p, err)
		}
	})
	t.Run("refused when a key is readable by others", func(t *testing.T) {
		p := filepath.Join(dir, "ca.key")
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(p, 0o600)
		var ue *stack.UntrustedError
		if err := patroni.EnsureTLS(dir, members, osUser, now); !errors.As(err, &ue) || ue.Path != p {
			t.Errorf("EnsureTLS with %s mode 0644: %v, want an UntrustedError naming it", p, err)
		}
	})
	t.Run("refused with a symbolic link", func(t *testing.T) {
		p := filepath.Join(dir, "etcd-3.crt")
		if err := os.Symlink(filepath.Join(base, "elsewhere"), p); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(p)
		var ue *stack.UntrustedError
		if err := patroni.EnsureTLS(dir, members, osUser, now); !errors.As(err, &ue) || ue.Path != p {
			t.Errorf("EnsureTLS with a link %s: %v, want an UntrustedError naming it", p, err)
		}
	})
	t.Run("refused when owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a file away")
		}
		nobody, err := pgnode.LookupAccount("nobody")
		if err != nil || nobody == nil {
			t.Skipf("no user nobody: %v", err)
		}
		p := filepath.Join(dir, "ca.crt")
		if err := pgnode.ChownAll(p, nobody); err != nil {
			t.Fatal(err)
		}
		defer os.Chown(p, 0, 0)
		var ue *stack.UntrustedError
		if err := patroni.EnsureTLS(dir, members, osUser, now); !errors.As(err, &ue) || ue.Path != p {
			t.Errorf("EnsureTLS with %s owned by nobody: %v, want an UntrustedError naming it", p, err)
		}
	})
	t.Run("half a CA is refused, not replaced", func(t *testing.T) {
		saved := read("ca.key")
		if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(filepath.Join(dir, "ca.key"), saved, 0o600)
		if err := patroni.EnsureTLS(dir, members, osUser, now); err == nil || !strings.Contains(err.Error(), "remove "+dir) {
			t.Errorf("EnsureTLS without ca.key: %v, want an error saying to remove %s", err, dir)
		}
	})
}

// tlsClient is an HTTP client presenting cert (none when nil) and trusting
// the CA file caFile.
func tlsClient(t *testing.T, caFile string, cert *tls.Certificate) *http.Client {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// foreignPair is a certificate from a CA other than the home's, for usage,
// with the address 127.0.0.1; its files are written in dir.
func foreignPair(t *testing.T, dir string, usage pki.Usage) (tls.Certificate, patroni.TLSFiles) {
	t.Helper()
	ca, err := pki.NewCA("another CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("intruder", usage, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	f := patroni.TLSFiles{CA: filepath.Join(dir, "other-ca.crt"), Cert: filepath.Join(dir, "other.crt"), Key: filepath.Join(dir, "other.key")}
	for path, b := range map[string][]byte{f.CA: pki.CertPEM(ca.Cert), f.Cert: pki.CertPEM(leaf.Cert), f.Key: key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pair, f
}

// TestEtcdMutualTLS starts etcd as the engine does (StartEtcd with the
// files of ensureTLS) and checks that it admits only clients and peers
// with a certificate signed by the home's CA.
func TestEtcdMutualTLS(t *testing.T) {
	requireBinaries(t)
	ctx := context.Background()
	base := t.TempDir()
	tlsDir := filepath.Join(base, "tls")
	members := []patroni.TLSMember{{Name: "etcd0", Addr: "127.0.0.1"}, {Name: "joiner", Addr: "127.0.0.1"}}
	if err := patroni.EnsureTLS(tlsDir, members, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "etcd"), nil))
	spec := patroni.EtcdSpec{Dir: filepath.Join(base, "etcd"), ClientPort: freePort(t), PeerPort: freePort(t),
		TLS: patroni.EtcdMemberTLS(tlsDir, "etcd0")}
	started := time.Now()
	etcd, err := patroni.StartEtcd(ctx, logger, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd with TLS answered in %v", time.Since(started).Round(time.Millisecond))
	t.Cleanup(func() { _ = etcd.Stop(10 * time.Second) })
	if !strings.HasPrefix(spec.ClientURL(), "https://") || !strings.HasPrefix(spec.PeerURL(), "https://") {
		t.Fatalf("client URL %s, peer URL %s: want https", spec.ClientURL(), spec.PeerURL())
	}
	own, err := tls.LoadX509KeyPair(spec.TLS.Client.Cert, spec.TLS.Client.Key)
	if err != nil {
		t.Fatal(err)
	}
	foreign, foreignFiles := foreignPair(t, base, pki.Server)
	put := func(hc *http.Client, url string) error {
		resp, err := hc.Post(url+"/v3/kv/put", "application/json",
			strings.NewReader(`{"key":"L3NlcnZpY2UvbWFpbi9sZWFkZXI=","value":"aW50cnVkZXI="}`)) // /service/main/leader
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	t.Run("clients", func(t *testing.T) {
		if err := put(tlsClient(t, spec.TLS.CA, &own), spec.ClientURL()); err != nil {
			t.Fatalf("a client with the home's certificate cannot write: %v", err)
		}
		for name, hc := range map[string]*http.Client{
			"no certificate": tlsClient(t, spec.TLS.CA, nil),
			"another CA's":   tlsClient(t, spec.TLS.CA, &foreign),
			"plain http":     {Timeout: 5 * time.Second},
		} {
			url := spec.ClientURL()
			if name == "plain http" {
				url = "http://" + spec.Endpoint()
			}
			if err := put(hc, url); err == nil {
				t.Errorf("a client with %s wrote the leader key", name)
			}
		}
	})

	t.Run("peer port", func(t *testing.T) {
		peer := spec.PeerURL()
		if resp, err := tlsClient(t, spec.TLS.CA, &own).Get(peer + "/version"); err != nil {
			t.Fatalf("the peer port refuses the home's certificate: %v", err)
		} else {
			resp.Body.Close()
		}
		for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "another CA's": &foreign} {
			if resp, err := tlsClient(t, spec.TLS.CA, cert).Get(peer + "/version"); err == nil {
				resp.Body.Close()
				t.Errorf("the peer port answered a client with %s", name)
			}
		}
	})

	// A member with another CA's certificate cannot join; the same member
	// with the home's can.
	t.Run("peers", func(t *testing.T) {
		etcdBin, err := exec.LookPath("etcd")
		if err != nil {
			t.Fatal(err)
		}
		hc := tlsClient(t, spec.TLS.CA, &own)
		joinerPeer := "https://127.0.0.1:" + strconv.Itoa(freePort(t))
		joinerClient := "https://127.0.0.1:" + strconv.Itoa(freePort(t))
		post := func(path, body string, out any) error {
			resp, err := hc.Post(spec.ClientURL()+path, "application/json", strings.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: status %d", path, resp.StatusCode)
			}
			if out != nil {
				return json.NewDecoder(resp.Body).Decode(out)
			}
			return nil
		}
		if err := post("/v3/cluster/member/add", `{"peerURLs":["`+joinerPeer+`"]}`, nil); err != nil {
			t.Fatal(err)
		}
		// joined reports whether the member at joinerPeer has started, as
		// etcd0 sees it (a started member has a name).
		joined := func() (bool, error) {
			var list struct {
				Members []struct {
					Name     string   `json:"name"`
					PeerURLs []string `json:"peerURLs"`
				} `json:"members"`
			}
			if err := post("/v3/cluster/member/list", `{}`, &list); err != nil {
				return false, err
			}
			for _, m := range list.Members {
				if len(m.PeerURLs) == 1 && m.PeerURLs[0] == joinerPeer {
					return m.Name != "", nil
				}
			}
			return false, errors.New("the joiner is not a member")
		}
		startJoiner := func(f patroni.TLSFiles, data string) (*exec.Cmd, string) {
			logPath := data + ".log"
			out, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			cmd := exec.Command(etcdBin, "--name", "joiner", "--data-dir", data,
				"--listen-client-urls", joinerClient, "--advertise-client-urls", joinerClient,
				"--listen-peer-urls", joinerPeer, "--initial-advertise-peer-urls", joinerPeer,
				"--initial-cluster", "etcd0="+spec.PeerURL()+",joiner="+joinerPeer, "--initial-cluster-state", "existing",
				"--cert-file", f.Cert, "--key-file", f.Key, "--trusted-ca-file", f.CA, "--client-cert-auth",
				"--peer-cert-file", f.Cert, "--peer-key-file", f.Key, "--peer-trusted-ca-file", f.CA, "--peer-client-cert-auth")
			cmd.Stdout, cmd.Stderr = out, out
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, logPath
		}
		logTail := func(path string) []byte {
			b, _ := os.ReadFile(path)
			return tail(b, 800)
		}
		stopJoiner := func(cmd *exec.Cmd) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		// Wait until etcd0 has turned the intruder's connections away (its
		// log says so after the intruder started), then check that it has
		// not joined.
		etcdLog := spec.LogPath()
		before, err := os.ReadFile(etcdLog)
		if err != nil {
			t.Fatal(err)
		}
		// The intruder trusts the home's CA (its certificate is no secret)
		// but has no certificate the CA signed.
		intruder, out := startJoiner(patroni.TLSFiles{CA: spec.TLS.CA, Cert: foreignFiles.Cert, Key: foreignFiles.Key},
			filepath.Join(base, "intruder"))
		t.Cleanup(func() { stopJoiner(intruder) })
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(etcdLog)
				t.Logf("etcd0's log since the intruder started:\n%s\nintruder's log:\n%s", tail(b[len(before):], 3000), logTail(out))
			}
		})
		poll(t, time.Minute, "etcd0 rejects the intruder's certificate", func() error {
			b, err := os.ReadFile(etcdLog)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b[len(before):]), "\n") {
				if strings.Contains(line, "rejected connection") && strings.Contains(line, "unknown authority") {
					return nil
				}
			}
			return errors.New("etcd0 has rejected no certificate of an unknown authority since the intruder started")
		})
		if ok, err := joined(); err != nil || ok {
			t.Fatalf("the member with another CA's certificate: joined %v (%v), want not joined", ok, err)
		}
		stopJoiner(intruder)
		t.Logf("intruder's output tail: %s", logTail(out))

		legit, out2 := startJoiner(patroni.TLSFiles{CA: spec.TLS.CA, Cert: filepath.Join(tlsDir, "joiner.crt"), Key: filepath.Join(tlsDir, "joiner.key")},
			filepath.Join(base, "joiner"))
		t.Cleanup(func() { stopJoiner(legit) })
		poll(t, 2*time.Minute, "the member with the home's certificate joins", func() error {
			ok, err := joined()
			if err == nil && !ok {
				err = errors.New("not started yet")
			}
			if err != nil {
				return fmt.Errorf("%w; joiner's output: %s", err, logTail(out2))
			}
			return nil
		})
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestEngineEtcdTLSByHome checks which homes get etcd with TLS: a new one
// does, and keeps it on resume with the same CA; one whose etcd data was
// made over plain http before keeps http, with a warning.
func TestEngineEtcdTLSByHome(t *testing.T) {
	requireBinaries(t)
	ctx := context.Background()
	newEngine := func(t *testing.T, h stack.Home, log *bytes.Buffer) *patroni.Engine {
		t.Helper()
		e, err := patroni.NewEngine(patroni.EngineConfig{Home: h, BinDir: "/nonexistent",
			Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: log}, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	stop := func(t *testing.T, e *patroni.Engine) {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := e.Stop(sctx); err != nil {
			t.Error(err)
		}
	}
	health := func(t *testing.T, h stack.Home, e *patroni.Engine) string {
		t.Helper()
		hc, scheme, err := patroni.EtcdHTTPClient(h)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get(scheme + "://" + e.EtcdMembers()[0].Endpoint() + "/health")
		if err != nil {
			t.Fatalf("etcd health over %s: %v", scheme, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("etcd health over %s: status %d", scheme, resp.StatusCode)
		}
		return scheme
	}

	t.Run("new home", func(t *testing.T) {
		h := newHome(t)
		var log bytes.Buffer
		e := newEngine(t, h, &log)
		cfg := e.AgentConfig("main-1").Etcd3
		tlsDir := filepath.Join(h.Path("patroni"), "tls")
		want := patroni.Etcd3{Hosts: cfg.Hosts, Protocol: "https", CACert: filepath.Join(tlsDir, "ca.crt"),
			Cert: filepath.Join(tlsDir, "client.crt"), Key: filepath.Join(tlsDir, "client.key")}
		if d := cmp.Diff(want, cfg); d != "" {
			t.Errorf("agent's etcd3 (-want +got):\n%s", d)
		}
		if !e.EtcdTLSOn() {
			t.Fatal("a new home's etcd is not on TLS")
		}
		if err := e.StartEtcdOnly(ctx); err != nil {
			t.Fatal(err)
		}
		if s := health(t, h, e); s != "https" {
			t.Errorf("scheme %s, want https", s)
		}
		stop(t, e)
		ca, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		// Resumed: still TLS, with the same CA.
		e = newEngine(t, h, &log)
		if !e.EtcdTLSOn() {
			t.Fatal("a resumed home's etcd is not on TLS")
		}
		if err := e.StartEtcdOnly(ctx); err != nil {
			t.Fatal(err)
		}
		defer stop(t, e)
		health(t, h, e)
		if again, _ := os.ReadFile(filepath.Join(tlsDir, "ca.crt")); !bytes.Equal(ca, again) {
			t.Error("the CA changed on resume")
		}
	})

	t.Run("home made over http", func(t *testing.T) {
		h := newHome(t)
		dir := h.Path("patroni")
		// An etcd as engines before TLS made it, with a key in it.
		old := patroni.EtcdSpec{Dir: filepath.Join(dir, "etcd"), ClientPort: freePort(t), PeerPort: freePort(t)}
		p, err := patroni.StartEtcd(ctx, slog.New(slog.DiscardHandler), old)
		if err != nil {
			t.Fatal(err)
		}
		put := func() error {
			resp, err := http.Post(old.ClientURL()+"/v3/kv/put", "application/json", strings.NewReader(`{"key":"a2V5","value":"b2xk"}`))
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		}
		if err := put(); err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		state := fmt.Sprintf(`{"version":1,"etcd_client_port":%d,"etcd_peer_port":%d}`, old.ClientPort, old.PeerPort)
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o600); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		e := newEngine(t, h, &log)
		if e.EtcdTLSOn() || e.AgentConfig("main-1").Etcd3.Protocol != "" {
			t.Fatalf("a home made over http: TLS %v, agent's etcd3 %+v; want plain http", e.EtcdTLSOn(), e.AgentConfig("main-1").Etcd3)
		}
		if err := e.StartEtcdOnly(ctx); err != nil {
			t.Fatal(err)
		}
		defer stop(t, e)
		if s := health(t, h, e); s != "http" {
			t.Errorf("scheme %s, want http", s)
		}
		resp, err := http.Post(old.ClientURL()+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"a2V5"}`))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Kvs []struct {
				Value string `json:"value"`
			} `json:"kvs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || len(got.Kvs) != 1 || got.Kvs[0].Value != "b2xk" {
			t.Errorf("the old etcd's key after resume: %+v (%v), want it kept", got, err)
		}
		if !strings.Contains(log.String(), "without TLS") {
			t.Errorf("no warning about plain http in the engine's log:\n%s", log.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "tls")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tls/ made for a home that keeps http: %v", err)
		}
	})
}

// lockedWriter serialises writes to w: the engine logs from goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
