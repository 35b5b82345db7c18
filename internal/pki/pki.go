// Package pki makes and keeps the cluster's certificates: a CA made on the
// first start, the API server's serving certificate and the admin client
// certificate, nodes' client certificates and the node join token
// (nodetoken.go), plus kubeconfig files that use them. Keys are ECDSA P-256:
// generating one takes well under a millisecond, so a fresh start stays fast.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Bundle is the set of certificates a server needs.
type Bundle struct {
	CACertPEM    []byte
	CA           *x509.Certificate
	CAKey        crypto.Signer
	Serving      tls.Certificate
	AdminCertPEM []byte
	AdminKeyPEM  []byte
	// KubeletClientCertPEM and KubeletClientKeyPEM are the API server's
	// client certificate towards kubelets (pods/log): CN
	// kube-apiserver-kubelet-client, O system:masters, as kubeadm's.
	KubeletClientCertPEM []byte
	KubeletClientKeyPEM  []byte
}

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
)

// alwaysServed are the names every serving certificate carries, so clients
// inside and outside the cluster can verify the API server by them.
var alwaysServed = []string{"127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default",
	"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// Ensure loads the certificates in dir, making whatever is missing: the CA on
// a first start, the serving certificate when it lacks one of hosts (IPs or
// DNS names), the admin client certificate (CN admin, O system:masters) and
// the API server's client certificate towards kubelets.
func Ensure(dir string, hosts []string) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	b := &Bundle{}
	var err error
	b.CA, b.CAKey, b.CACertPEM, err = loadOrMakeCA(dir)
	if err != nil {
		return nil, err
	}
	names := append(append([]string{}, alwaysServed...), hosts...)
	certPEM, keyPEM, err := loadOrIssue(dir, "apiserver", b, func(c *x509.Certificate) bool { return covers(c, names) },
		func() (*x509.Certificate, error) { return servingTemplate(names), nil })
	if err != nil {
		return nil, err
	}
	if b.Serving, err = tls.X509KeyPair(append(certPEM, b.CACertPEM...), keyPEM); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	b.AdminCertPEM, b.AdminKeyPEM, err = loadOrIssue(dir, "admin", b, func(*x509.Certificate) bool { return true },
		func() (*x509.Certificate, error) {
			return clientTemplate("admin", []string{"system:masters"}, leafValidity), nil
		})
	if err != nil {
		return nil, err
	}
	b.KubeletClientCertPEM, b.KubeletClientKeyPEM, err = loadOrIssue(dir, "apiserver-kubelet-client", b, func(*x509.Certificate) bool { return true },
		func() (*x509.Certificate, error) {
			return clientTemplate("kube-apiserver-kubelet-client", []string{"system:masters"}, leafValidity), nil
		})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ClientCAs is the pool client certificates are verified against.
func (b *Bundle) ClientCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(b.CA)
	return pool
}

// IssueClientCert signs a client certificate for a user and its groups.
func (b *Bundle) IssueClientCert(commonName string, groups []string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	return b.sign(clientTemplate(commonName, groups, validFor))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func clientTemplate(cn string, groups []string, validFor time.Duration) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: groups},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(validFor),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func servingTemplate(names []string) *x509.Certificate {
	now := time.Now()
	t := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "navarch-apiserver"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(leafValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else if n != "" {
			t.DNSNames = append(t.DNSNames, n)
		}
	}
	return t
}

// covers reports whether c is valid for every name and not about to expire.
func covers(c *x509.Certificate, names []string) bool {
	if time.Until(c.NotAfter) < 30*24*time.Hour {
		return false
	}
	for _, n := range names {
		if n != "" && c.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func loadOrMakeCA(dir string) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cluster CA in %s: %w", dir, err)
		}
		ca, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cluster CA in %s: %w", dir, err)
		}
		return ca, pair.PrivateKey.(crypto.Signer), certPEM, nil
	}
	if !errors.Is(err1, os.ErrNotExist) && err1 != nil {
		return nil, nil, nil, err1
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "navarch-ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(caValidity),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key goes first: a certificate without its key would be unusable.
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	return ca, key, certPEM, nil
}

// loadOrIssue loads name.crt/name.key when they were signed by the bundle's
// CA and still fit, or issues new ones from template.
func loadOrIssue(dir, name string, b *Bundle, fits func(*x509.Certificate) bool, template func() (*x509.Certificate, error)) ([]byte, []byte, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		if pair, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if c, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && c.CheckSignatureFrom(b.CA) == nil && fits(c) {
				return certPEM, keyPEM, nil
			}
		}
	}
	tmpl, err := template()
	if err != nil {
		return nil, nil, err
	}
	if certPEM, keyPEM, err = b.sign(tmpl); err != nil {
		return nil, nil, fmt.Errorf("issue %s certificate: %w", name, err)
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func (b *Bundle) sign(tmpl *x509.Certificate) ([]byte, []byte, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.CA, &key.PublicKey, b.CAKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// writeAtomic writes a file through a temporary file and a rename, so a crash
// leaves either the old content or the new, never half of it.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for serverURL with a client certificate,
// with cluster, user and context all named "navarch".
func WriteKubeconfig(path, serverURL string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["navarch"] = &clientcmdapi.Cluster{Server: serverURL, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["navarch"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["navarch"] = &clientcmdapi.Context{Cluster: "navarch", AuthInfo: "navarch", Namespace: "default"}
	cfg.CurrentContext = "navarch"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return writeAtomic(path, data, 0o600)
}
