package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// A node join token is "nvt1.<CA hash>.<secret>": the hex SHA-256 of the
// cluster CA certificate's DER, so that a joining agent can pin the CA from
// the token alone (no CA file to copy, as kubeadm's discovery-token-ca-cert-hash),
// and a random secret the API server accepts as a bearer token.
const nodeTokenPrefix = "nvt1."

// EnsureCA loads the cluster CA in dir, making it on the first start. The
// bundle it returns has only the CA set: enough to sign client
// certificates (IssueClientCert) and to make the node join token.
func EnsureCA(dir string) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	b := &Bundle{}
	var err error
	if b.CA, b.CAKey, b.CACertPEM, err = loadOrMakeCA(dir); err != nil {
		return nil, err
	}
	return b, nil
}

// EnsureNodeToken returns the node join token in path, writing a new one
// (mode 0600) when there is none or when it names another CA. made says
// whether it was written now.
func EnsureNodeToken(path string, ca *x509.Certificate) (token string, made bool, err error) {
	want := CAHash(ca)
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if hash, err := NodeTokenCAHash(tok); err == nil && hash == want {
			return tok, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("node token %s: %w", path, err)
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return "", false, err
	}
	token = nodeTokenPrefix + want + "." + hex.EncodeToString(secret)
	if err := writeAtomic(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("node token: %w", err)
	}
	return token, true, nil
}

// CAHash is the hex SHA-256 of a CA certificate's DER, as a join token
// carries it.
func CAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.Raw)
	return hex.EncodeToString(sum[:])
}

// IsNodeToken reports whether s has the form of a node join token.
func IsNodeToken(s string) bool {
	_, err := NodeTokenCAHash(s)
	return err == nil
}

// NodeTokenCAHash checks a join token's form and returns its CA hash.
func NodeTokenCAHash(token string) (string, error) {
	rest, ok := strings.CutPrefix(token, nodeTokenPrefix)
	hash, secret, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(hash) != 2*sha256.Size || !isHex(hash) || len(secret) < 16 || !isHex(secret) {
		return "", errors.New("not a node join token (want nvt1.<sha256 of the cluster CA>.<secret>, as the server writes to DATA_DIR/node-token)")
	}
	return strings.ToLower(hash), nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// IssueNodeClientCert signs the client certificate a node's kubelet
// authenticates with: CN system:node:<name>, O system:nodes, as upstream's
// kubelet client certificates.
func (b *Bundle) IssueNodeClientCert(nodeName string) (certPEM, keyPEM []byte, err error) {
	return b.IssueClientCert("system:node:"+nodeName, []string{"system:nodes"}, leafValidity)
}
