package apiserver

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestNodeTokenAuthenticator(t *testing.T) {
	const token = "nvt1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.00112233445566778899aabbccddeeff"
	path := filepath.Join(t.TempDir(), "node-token")
	a := NewNodeTokenAuthenticator(path)
	auth := func(header string) (*User, bool, error) {
		r := httptest.NewRequest("GET", "/api/v1/nodes", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		return a.Authenticate(r)
	}
	// Before the server has written the file no token is its own.
	if u, ok, err := auth("Bearer " + token); ok || u != nil || err != nil {
		t.Fatalf("without a token file: %v %v %v, want not ok", u, ok, err)
	}
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, ok, err := auth("Bearer " + token)
	if !ok || err != nil || u.Name != NodeTokenUser || len(u.Groups) != 2 || u.Groups[0] != "system:nodes" || u.Groups[1] != "system:authenticated" {
		t.Fatalf("the node token: %+v %v %v, want %s in system:nodes and system:authenticated", u, ok, err, NodeTokenUser)
	}
	// Tokens that are not its own (a service account's JWT, a wrong
	// secret, other schemes) leave the request to the next authenticator.
	for _, h := range []string{"", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", "Bearer " + token[:len(token)-1] + "0", "Basic " + token, "Bearer"} {
		if u, ok, err := auth(h); ok || u != nil || err != nil {
			t.Errorf("Authorization %q: %v %v %v, want (nil, false, nil)", h, u, ok, err)
		}
	}
}
