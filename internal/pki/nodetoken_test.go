package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeTokenNamesTheCAAndIsKept(t *testing.T) {
	dir := t.TempDir()
	b, err := EnsureCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node-token")
	tok, made, err := EnsureNodeToken(path, b.CA)
	if err != nil || !made {
		t.Fatalf("first EnsureNodeToken: made=%v err=%v", made, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", fi.Mode(), err)
	}
	hash, err := NodeTokenCAHash(tok)
	if err != nil || hash != CAHash(b.CA) || !strings.HasPrefix(tok, "nvt1."+hash+".") {
		t.Fatalf("token %q: hash %q err %v, want the CA's %s", tok, hash, err, CAHash(b.CA))
	}
	again, made, err := EnsureNodeToken(path, b.CA)
	if err != nil || made || again != tok {
		t.Fatalf("second EnsureNodeToken: %q made=%v err=%v, want the same token", again, made, err)
	}
	// The full Ensure loads the CA EnsureCA made.
	full, err := Ensure(filepath.Join(dir, "pki"), nil)
	if err != nil || !full.CA.Equal(b.CA) {
		t.Fatalf("Ensure after EnsureCA: another CA (err %v)", err)
	}
	// A token of another CA is replaced.
	other, _ := EnsureCA(t.TempDir())
	if tok2, made, err := EnsureNodeToken(path, other.CA); err != nil || !made || tok2 == tok {
		t.Fatalf("token for another CA: %q made=%v err=%v", tok2, made, err)
	}
	for _, bad := range []string{"", "nvt1.", "nvt1.abc.def", "nvt2." + hash + ".00112233445566778899aabbccddeeff", "nvt1." + hash + ".short"} {
		if _, err := NodeTokenCAHash(bad); err == nil {
			t.Errorf("NodeTokenCAHash(%q) accepted it", bad)
		}
	}
}

func TestNodeClientCertIsTheNode(t *testing.T) {
	b, err := EnsureCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := b.IssueNodeClientCert("node-a")
	if err != nil {
		t.Fatal(err)
	}
	c := parsePEM(t, certPEM)
	if c.Subject.CommonName != "system:node:node-a" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("subject %v, want CN system:node:node-a O system:nodes", c.Subject)
	}
	if err := c.CheckSignatureFrom(b.CA); err != nil {
		t.Fatal(err)
	}
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
