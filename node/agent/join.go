package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/internal/pki"
)

// JoinConfig is the client config of an agent joining the cluster at
// serverURL with its node join token. The token carries the hash of the
// cluster CA, so nothing else needs copying from the server: the CA is
// taken from the certificates the server presents on a first, unverified
// connection (the one whose SHA-256 matches) and is then the only root the
// client trusts. The token is the client's bearer token; it is checked
// here, so that a wrong one is one error at start rather than a kubelet
// that retries forever.
func JoinConfig(ctx context.Context, serverURL, token string) (*rest.Config, error) {
	hash, err := pki.NodeTokenCAHash(token)
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want https://HOST:PORT", serverURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	ca, err := fetchCA(ctx, addr, u.Hostname(), hash)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", serverURL, err)
	}
	cfg := &rest.Config{
		Host:            serverURL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})},
		Timeout:         30 * time.Second,
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := client.Discovery().RESTClient().Get().AbsPath("/api").DoRaw(ctx); err != nil {
		if apierrors.IsUnauthorized(err) {
			return nil, fmt.Errorf("join %s: the server does not accept the token (401 Unauthorized): its secret is not the one in the server's DATA_DIR/node-token", serverURL)
		}
		return nil, fmt.Errorf("join %s: %w", serverURL, err)
	}
	cfg.Timeout = 0 // watches run for long; the check above was the only call that needs one
	return cfg, nil
}

// fetchCA connects to addr without verifying it and returns the certificate
// of the chain it presents whose DER hashes to hash, after checking that the
// serving certificate is signed by it for host.
func fetchCA(ctx context.Context, addr, host, hash string) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, ServerName: host, MinVersion: tls.VersionTLS12}}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return nil, errors.New("the server presented no certificate")
	}
	for _, c := range chain {
		sum := sha256.Sum256(c.Raw)
		if hex.EncodeToString(sum[:]) != hash {
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(c)
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			return nil, fmt.Errorf("the server's certificate does not verify against the CA the token names: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("the server's CA is not the one the token names (sha256 %s): the token is from another cluster, or this is not the server", hash)
}
