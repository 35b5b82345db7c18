package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestServiceAccountKeyIsMadeOnceAndLoaded(t *testing.T) {
	dir := t.TempDir()
	k1, err := EnsureServiceAccountKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := EnsureServiceAccountKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.(*ecdsa.PrivateKey).Equal(k2) {
		t.Fatal("a second start made a new service account key")
	}
	pubPEM, err := os.ReadFile(filepath.Join(dir, "sa.pub"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil || !k1.(*ecdsa.PrivateKey).PublicKey.Equal(pub) {
		t.Fatalf("sa.pub is not the public half of sa.key: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "sa.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("sa.key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestServiceAccountKeyKeepsAnRSAKey(t *testing.T) {
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := EnsureServiceAccountKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rk.Equal(k) {
		t.Fatal("an existing RSA key was not used as it is")
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureServiceAccountKey(dir); err == nil {
		t.Fatal("a broken sa.key was accepted")
	}
}
