package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnsureServiceAccountKey loads the key service account tokens are signed
// with from dir/sa.key, making it (and dir/sa.pub, its public half, for
// whoever verifies tokens outside the API server) on the first start, as
// kubeadm keeps sa.key and sa.pub next to the CA. A new key is ECDSA P-256
// (tokens are ES256); an existing RSA or ECDSA key in PKCS#1, SEC 1 or
// PKCS#8 form is used as it is, so a key brought from another cluster keeps
// its tokens valid.
func EnsureServiceAccountKey(dir string) (crypto.Signer, error) {
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	keyPEM, err := os.ReadFile(keyPath)
	if err == nil {
		key, err := parsePrivateKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("service account key %s: %w", keyPath, err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	// The public key goes first: sa.key is what marks the pair complete.
	if err := writeAtomic(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, err
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}
