package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func TestEnsureIsStableAndCertificatesVerify(t *testing.T) {
	dir := t.TempDir()
	b1, err := Ensure(dir, []string{"10.1.2.3", "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Ensure(dir, []string{"10.1.2.3", "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if !b1.CA.Equal(b2.CA) || string(b1.AdminCertPEM) != string(b2.AdminCertPEM) {
		t.Fatal("a second Ensure made new certificates")
	}
	leaf, _ := x509.ParseCertificate(b2.Serving.Certificate[0])
	for _, host := range []string{"127.0.0.1", "localhost", "10.1.2.3", "node-a", "kubernetes.default.svc"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: b2.ClientCAs()}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	// A new host re-issues the serving certificate but keeps the CA.
	b3, err := Ensure(dir, []string{"10.9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	leaf3, _ := x509.ParseCertificate(b3.Serving.Certificate[0])
	if !b3.CA.Equal(b1.CA) || leaf3.VerifyHostname("10.9.9.9") != nil {
		t.Fatal("serving certificate not re-issued for a new host under the same CA")
	}
	admin, err := tls.X509KeyPair(b1.AdminCertPEM, b1.AdminKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ac, _ := x509.ParseCertificate(admin.Certificate[0])
	if _, err := ac.Verify(x509.VerifyOptions{Roots: b1.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("admin client certificate: %v", err)
	}
	if ac.Subject.CommonName != "admin" || len(ac.Subject.Organization) != 1 || ac.Subject.Organization[0] != "system:masters" {
		t.Fatalf("admin subject: %v", ac.Subject)
	}
}

// The API server's client certificate towards kubelets is issued once, kept
// across starts, and verifies as a client certificate of the cluster CA.
func TestKubeletClientCertificate(t *testing.T) {
	dir := t.TempDir()
	b1, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b1.KubeletClientCertPEM) == 0 || string(b1.KubeletClientCertPEM) != string(b2.KubeletClientCertPEM) {
		t.Fatal("kubelet client certificate missing or re-issued by a second Ensure")
	}
	pair, err := tls.X509KeyPair(b2.KubeletClientCertPEM, b2.KubeletClientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := c.Verify(x509.VerifyOptions{Roots: b2.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("kubelet client certificate: %v", err)
	}
	if c.Subject.CommonName != "kube-apiserver-kubelet-client" {
		t.Fatalf("kubelet client subject: %v", c.Subject)
	}
}

func TestTLSHandshakeWithClientCertificate(t *testing.T) {
	b, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{b.Serving}, ClientCAs: b.ClientCAs(), ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	certPEM, keyPEM, err := b.IssueClientCert("node-a", []string{"system:nodes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := tls.X509KeyPair(certPEM, keyPEM)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(b.CACertPEM)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestKubeconfigLoads(t *testing.T) {
	b, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "admin.kubeconfig")
	if err := WriteKubeconfig(path, "https://127.0.0.1:6443", b.CACertPEM, b.AdminCertPEM, b.AdminKeyPEM); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || len(cfg.CertData) == 0 || len(cfg.CAData) == 0 {
		t.Fatalf("rest config from kubeconfig: %+v", cfg)
	}
}

func BenchmarkEnsureFresh(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Ensure(b.TempDir(), []string{"10.0.0.1"}); err != nil {
			b.Fatal(err)
		}
	}
}
