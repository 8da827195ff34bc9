package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"socnet/internal/pki"
)

func mustCA(t *testing.T, now time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := mustCA(t, now)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA %v, valid %v, max path %d zero %v; want a CA that signs leaves only", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage %v, want cert sign and CRL sign", c.KeyUsage)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", c.PublicKey)
	}
	if !c.NotBefore.Before(now) || !c.NotAfter.Equal(now.Add(pki.CAValidity)) {
		t.Errorf("CA validity %v..%v, want from before %v for %v", c.NotBefore, c.NotAfter, now, pki.CAValidity)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if !pki.Matches(c, ca.Key) {
		t.Error("CA key does not match its certificate")
	}
	other := mustCA(t, now)
	if c.SerialNumber.Cmp(other.Cert.SerialNumber) == 0 || pki.Matches(c, other.Key) {
		t.Error("two CAs share a serial or a key")
	}
}

func TestIssue(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, now)
	addr := net.ParseIP("10.77.3.4")
	localhost := net.ParseIP("127.0.0.1")
	tests := []struct {
		name    string
		usage   pki.Usage
		ips     []net.IP
		wantEKU []x509.ExtKeyUsage
	}{
		{"etcd-1", pki.Server, []net.IP{addr, localhost}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{"client", pki.Client, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.Issue(tt.name, tt.usage, tt.ips, now)
			if err != nil {
				t.Fatal(err)
			}
			c := leaf.Cert
			if c.IsCA || c.Subject.CommonName != tt.name {
				t.Errorf("IsCA %v, CN %q; want a leaf named %s", c.IsCA, c.Subject.CommonName, tt.name)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v, want digital signature only", c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("extended key usage %v, want %v", c.ExtKeyUsage, tt.wantEKU)
			}
			if len(c.IPAddresses) != len(tt.ips) || len(c.DNSNames) != 0 {
				t.Errorf("SANs %v %v, want exactly %v", c.IPAddresses, c.DNSNames, tt.ips)
			}
			for i, ip := range tt.ips {
				if i < len(c.IPAddresses) && !c.IPAddresses[i].Equal(ip) {
					t.Errorf("IP SAN %d: %v, want %v", i, c.IPAddresses[i], ip)
				}
			}
			if !c.NotAfter.Equal(now.Add(pki.LeafValidity).Truncate(time.Second)) && !c.NotAfter.Equal(now.Add(pki.LeafValidity)) {
				if d := c.NotAfter.Sub(now.Add(pki.LeafValidity)); d > time.Second || d < -time.Second {
					t.Errorf("not after %v, want %v", c.NotAfter, now.Add(pki.LeafValidity))
				}
			}
			if !pki.Matches(c, leaf.Key) {
				t.Error("key does not match")
			}
			if err := ca.Check(c, tt.usage, tt.ips, now, 24*time.Hour); err != nil {
				t.Errorf("Check of a fresh certificate: %v", err)
			}
			// The key and certificate survive PEM.
			kb, err := pki.KeyPEM(leaf.Key)
			if err != nil {
				t.Fatal(err)
			}
			k2, err := pki.ParseKeyPEM(kb)
			if err != nil {
				t.Fatal(err)
			}
			c2, err := pki.ParseCertPEM(pki.CertPEM(c))
			if err != nil {
				t.Fatal(err)
			}
			if !c2.Equal(c) || !pki.Matches(c2, k2) {
				t.Error("PEM round trip changed the certificate or key")
			}
		})
	}
	if _, err := ca.Issue("etcd-1", pki.Server, nil, now); err == nil {
		t.Error("a server certificate without an address was issued")
	}
}

// TestCheck lists what makes a leaf unfit, so that it is issued again.
func TestCheck(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, now)
	addr := net.ParseIP("10.77.3.4")
	server, err := ca.Issue("etcd-1", pki.Server, []net.IP{addr}, now)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue("client", pki.Client, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := mustCA(t, now)
	foreign, err := otherCA.Issue("etcd-1", pki.Server, []net.IP{addr}, now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		cert  *x509.Certificate
		usage pki.Usage
		ips   []net.IP
		at    time.Time
		want  string // "" = fit
	}{
		{"fits", server.Cert, pki.Server, []net.IP{addr}, now, ""},
		{"client fits", client.Cert, pki.Client, nil, now, ""},
		{"another CA", foreign.Cert, pki.Server, []net.IP{addr}, now, "unknown authority"},
		{"address missing", server.Cert, pki.Server, []net.IP{net.ParseIP("10.77.3.5")}, now, "no address 10.77.3.5"},
		{"client as server", client.Cert, pki.Server, nil, now, "incompatible key usage"},
		{"near its end", server.Cert, pki.Server, []net.IP{addr}, now.Add(pki.LeafValidity - 24*time.Hour), "expires"},
		{"expired", server.Cert, pki.Server, []net.IP{addr}, now.Add(pki.LeafValidity + time.Hour), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.Check(tt.cert, tt.usage, tt.ips, tt.at, 30*24*time.Hour)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Check: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	ca := mustCA(t, time.Now())
	kb, err := pki.KeyPEM(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cb := pki.CertPEM(ca.Cert)
	if _, err := pki.ParseCertPEM(kb); err == nil {
		t.Error("a key parsed as a certificate")
	}
	if _, err := pki.ParseKeyPEM(cb); err == nil {
		t.Error("a certificate parsed as a key")
	}
	if _, err := pki.ParseCertPEM(append(cb, cb...)); err == nil {
		t.Error("two certificates parsed as one")
	}
	if _, err := pki.ParseCertPEM([]byte("junk")); err == nil {
		t.Error("junk parsed as a certificate")
	}
}
