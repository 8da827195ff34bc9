// Package pki makes a small certificate authority and the certificates it
// signs, for mutual TLS between processes socnet runs (etcd's members and
// their clients). It only makes, encodes and checks certificates and keys;
// where they are kept, and who may read them, is the caller's business.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Validity of what NewCA and Issue make. socnet has no rotation: a leaf
// close to its end is issued again (see Check), the CA lasts longer.
const (
	CAValidity   = 20 * 365 * 24 * time.Hour
	LeafValidity = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore, for hosts whose clocks differ a little.
	clockSkew = time.Hour
)

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Usage is what a leaf certificate is for.
type Usage int

const (
	// Server is a TLS server that is also a client of its peers (an etcd
	// member): server and client authentication.
	Server Usage = iota
	// Client is a TLS client only.
	Client
)

// Leaf is a certificate the CA signed, and its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a CA named name (ECDSA P-256), valid from now for
// CAValidity. It may sign leaves only, not other CAs.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new ca %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new ca %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca %s: %w", name, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a new leaf named name (ECDSA P-256) for usage, valid from
// now for LeafValidity, whose IP SANs are ips (a Server needs at least
// one).
func (ca *CA) Issue(name string, usage Usage, ips []net.IP, now time.Time) (*Leaf, error) {
	if usage == Server && len(ips) == 0 {
		return nil, fmt.Errorf("issue %s: a server certificate needs an address", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	notAfter := now.Add(LeafValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           extKeyUsage(usage),
		BasicConstraintsValid: true,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

func extKeyUsage(u Usage) []x509.ExtKeyUsage {
	if u == Server {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// Check reports why leaf cannot serve as a certificate of usage signed by
// ca for ips until at least now+margin, nil when it can: a leaf that fails
// is issued again.
func (ca *CA) Check(leaf *x509.Certificate, usage Usage, ips []net.IP, now time.Time, margin time.Duration) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	// Verify accepts any one of KeyUsages; a server needs each of its.
	for _, ku := range extKeyUsage(usage) {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{ku}}); err != nil {
			return fmt.Errorf("certificate %s: %w", leaf.Subject.CommonName, err)
		}
	}
	if now.Add(margin).After(leaf.NotAfter) {
		return fmt.Errorf("certificate %s: expires %s", leaf.Subject.CommonName, leaf.NotAfter.Format(time.RFC3339))
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return fmt.Errorf("certificate %s: no address %s", leaf.Subject.CommonName, ip)
		}
	}
	return nil
}

// CertPEM encodes a certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key (PKCS #8), which Go, etcd and Python's ssl
// all read.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM decodes the one certificate in b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parse certificate: want one PEM CERTIFICATE block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// ParseKeyPEM decodes the one PKCS #8 private key in b.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parse key: want one PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse key: %T cannot sign", k)
	}
	return s, nil
}

// Matches reports whether key is the private key of cert.
func Matches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
