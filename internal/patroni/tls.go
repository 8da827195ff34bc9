package patroni

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/pki"
	"socnet/internal/stack"
)

// Layout of HOME/patroni/tls, etcd's mutual TLS (see ensureTLS):
//
//	ca.crt, ca.key          the home's CA
//	MEMBER.crt, MEMBER.key  an etcd member's server and peer certificate
//	client.crt, client.key  the client certificate of the agents and the engine
//
// Keys are 0600; client.key belongs to PostgreSQL's OS account when the
// agents run as it, the rest to the user who runs socnet.
const (
	tlsDirName    = "tls"
	caName        = "ca"
	clientName    = "client"
	clientCN      = "socnet-etcd-client"
	renewalMargin = 30 * 24 * time.Hour
)

// TLSFiles are the PEM files of one side of a mutual TLS connection.
type TLSFiles struct {
	CA   string // the CA certificate the other side must be signed by
	Cert string // this side's certificate
	Key  string // its private key
}

// EtcdTLS are an etcd member's files for mutual TLS with its clients and
// peers: both must present a certificate signed by CA.
type EtcdTLS struct {
	CA   string // the CA certificate clients and peers are checked against
	Cert string // the member's certificate, for clients and peers
	Key  string
	// Client is what the health check presents.
	Client TLSFiles
}

// tlsDir is HOME/patroni/tls.
type tlsDir string

func (d tlsDir) cert(name string) string { return filepath.Join(string(d), name+".crt") }
func (d tlsDir) key(name string) string  { return filepath.Join(string(d), name+".key") }

// client are the files the agents and the engine present to etcd.
func (d tlsDir) client() TLSFiles {
	return TLSFiles{CA: d.cert(caName), Cert: d.cert(clientName), Key: d.key(clientName)}
}

// member are the files of etcd member name.
func (d tlsDir) member(name string) *EtcdTLS {
	return &EtcdTLS{CA: d.cert(caName), Cert: d.cert(name), Key: d.key(name), Client: d.client()}
}

// tlsMember is an etcd member that needs a certificate.
type tlsMember struct {
	Name string
	Addr string
}

// ensureTLS makes the CA and the certificates in dir at the first start,
// and reuses them later: a certificate is issued again only when it no
// longer fits (another CA, an address it lacks, less than 30 days left, a
// key that is not its own). It refuses a directory someone other than the
// user running socnet (or, for client.key, acct) could have written. When
// acct is not nil client.key is handed to it, and dir is made traversable
// (not listable) so that it reaches the client's files.
func ensureTLS(log *slog.Logger, dir tlsDir, members []tlsMember, acct *pgnode.Account, now time.Time) error {
	dataUID := -1
	if acct != nil {
		dataUID = int(acct.Credential().Uid)
	}
	if err := os.MkdirAll(string(dir), 0o700); err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	if err := checkTLSDir(string(dir), stack.Owners{UID: os.Geteuid(), DataUID: dataUID}); err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	perm := fs.FileMode(0o700)
	if acct != nil {
		perm = 0o711
	}
	if err := os.Chmod(string(dir), perm); err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	ca, err := loadOrMakeCA(dir, now)
	if err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	localhost := net.IPv4(127, 0, 0, 1)
	for _, m := range members {
		ip := net.ParseIP(m.Addr)
		if ip == nil {
			return fmt.Errorf("etcd tls: member %s: address %q is not an IP address", m.Name, m.Addr)
		}
		ips := []net.IP{ip}
		if !ip.Equal(localhost) {
			ips = append(ips, localhost)
		}
		if err := ensureLeaf(log, dir, ca, m.Name, m.Name, pki.Server, ips, nil, now); err != nil {
			return fmt.Errorf("etcd tls: %w", err)
		}
	}
	if err := ensureLeaf(log, dir, ca, clientName, clientCN, pki.Client, nil, acct, now); err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	if err := pgnode.MakeParentsTraversable(dir.key(clientName), acct); err != nil {
		return fmt.Errorf("etcd tls: %w", err)
	}
	return nil
}

// loadOrMakeCA reads the home's CA, or makes it when neither of its files
// exists. Half a CA, or one whose key does not match, is an error: every
// certificate hangs on it, so it is never replaced silently.
func loadOrMakeCA(dir tlsDir, now time.Time) (*pki.CA, error) {
	certPath, keyPath := dir.cert(caName), dir.key(caName)
	cb, cerr := stack.ReadFile(certPath)
	kb, kerr := stack.ReadFile(keyPath)
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
		ca, err := pki.NewCA("socnet etcd CA "+randomHex(4), now)
		if err != nil {
			return nil, err
		}
		key, err := pki.KeyPEM(ca.Key)
		if err != nil {
			return nil, err
		}
		if err := stack.WriteFile(keyPath, key, 0o600); err != nil {
			return nil, err
		}
		if err := stack.WriteFile(certPath, pki.CertPEM(ca.Cert), 0o644); err != nil {
			return nil, err
		}
		return ca, nil
	}
	remake := fmt.Sprintf("remove %s to make a new CA and certificates", string(dir))
	if err := errors.Join(cerr, kerr); err != nil {
		return nil, fmt.Errorf("read the CA: %w (%s)", err, remake)
	}
	cert, err := pki.ParseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%s)", certPath, err, remake)
	}
	key, err := pki.ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%s)", keyPath, err, remake)
	}
	if !cert.IsCA || !pki.Matches(cert, key) {
		return nil, fmt.Errorf("%s is not a CA whose key is %s (%s)", certPath, keyPath, remake)
	}
	if now.Add(renewalMargin).After(cert.NotAfter) {
		return nil, fmt.Errorf("%s expires %s (%s)", certPath, cert.NotAfter.Format(time.RFC3339), remake)
	}
	return &pki.CA{Cert: cert, Key: key}, nil
}

// ensureLeaf keeps file name's certificate when it still fits, else issues
// it again; the key is handed to acct when not nil.
func ensureLeaf(log *slog.Logger, dir tlsDir, ca *pki.CA, name, cn string, usage pki.Usage, ips []net.IP, acct *pgnode.Account, now time.Time) error {
	certPath, keyPath := dir.cert(name), dir.key(name)
	why := leafProblem(ca, certPath, keyPath, usage, ips, now)
	if why == nil {
		return pgnode.ChownAll(keyPath, acct)
	}
	if !errors.Is(why, fs.ErrNotExist) {
		log.Info("etcd tls: issuing a certificate again", "name", name, "why", why)
	}
	leaf, err := ca.Issue(cn, usage, ips, now)
	if err != nil {
		return err
	}
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		return err
	}
	// The key first: a crash in between leaves a pair that does not match,
	// which the next start issues again.
	if err := stack.WriteFile(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := pgnode.ChownAll(keyPath, acct); err != nil {
		return err
	}
	return stack.WriteFile(certPath, pki.CertPEM(leaf.Cert), 0o644)
}

// leafProblem says why the pair at certPath, keyPath cannot be kept.
func leafProblem(ca *pki.CA, certPath, keyPath string, usage pki.Usage, ips []net.IP, now time.Time) error {
	cb, err := stack.ReadFile(certPath)
	if err != nil {
		return err
	}
	kb, err := stack.ReadFile(keyPath)
	if err != nil {
		return err
	}
	cert, err := pki.ParseCertPEM(cb)
	if err != nil {
		return err
	}
	key, err := pki.ParseKeyPEM(kb)
	if err != nil {
		return err
	}
	if !pki.Matches(cert, key) {
		return errors.New("the key is not the certificate's")
	}
	return ca.Check(cert, usage, ips, now, renewalMargin)
}

// checkTLSDir refuses dir, or an entry of it, that someone other than o.UID
// could have written or replaced, as stack.CheckHome does for the rest of
// a home; client.key alone may be o.DataUID's, every entry must be a
// regular file, and no key may be readable by group or others.
func checkTLSDir(dir string, o stack.Owners) error {
	return stack.CheckDir(dir, o, func(name string, fi fs.FileInfo) (bool, error) {
		path := filepath.Join(dir, name)
		if !fi.Mode().IsRegular() {
			return false, &stack.UntrustedError{Path: path, Problem: "is not a regular file", Fix: "remove it: rm -r " + path}
		}
		if perm := fi.Mode().Perm(); strings.HasSuffix(name, ".key") && perm&0o077 != 0 {
			return false, &stack.UntrustedError{Path: path,
				Problem: fmt.Sprintf("is a private key readable by group or others (mode %#o)", perm),
				Fix:     "run chmod 0600 " + path}
		}
		return name == clientName+".key", nil
	})
}

// ClientTLSConfig is the TLS configuration of a client of etcd presenting
// f's certificate.
func ClientTLSConfig(f TLSFiles) (*tls.Config, error) {
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("etcd client tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("etcd client tls: no certificate in %s", f.CA)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("etcd client tls: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// EtcdHTTPClient is an HTTP client of the etcd of the Patroni engine's
// home h, and the scheme of its URLs: https with the home's client
// certificate, or http for a home whose etcd was made before TLS.
func EtcdHTTPClient(h stack.Home) (*http.Client, string, error) {
	dir := tlsDir(filepath.Join(h.Path(homeDirName), tlsDirName))
	if _, err := os.Stat(dir.cert(caName)); errors.Is(err, fs.ErrNotExist) {
		return &http.Client{Timeout: 5 * time.Second}, "http", nil
	}
	cfg, err := ClientTLSConfig(dir.client())
	if err != nil {
		return nil, "", err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, "https", nil
}
