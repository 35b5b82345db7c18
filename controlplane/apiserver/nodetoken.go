package apiserver

import (
	"crypto/subtle"
	"net/http"
	"os"
	"strings"
	"sync"
)

// NodeTokenUser is the user a request with the node join token is: a node
// without a name of its own (the token is shared by every joining node).
const NodeTokenUser = "navarch:node-token"

// NodeTokenAuthenticator accepts the cluster's node join token (the file
// `navarch server` writes to DATA_DIR/node-token) as a bearer token, as
// user NodeTokenUser in groups system:nodes and system:authenticated.
// Other bearer tokens are not its own: it returns ok false so that the next
// authenticator is tried.
type NodeTokenAuthenticator struct {
	path string
	mu   sync.Mutex
	// token is the file's content once read: the server writes the file
	// before it serves, but the authenticator is made before that, so it
	// reads the file when the first token arrives. A changed file takes
	// effect at the next start.
	token string
}

// NewNodeTokenAuthenticator authenticates the token in the file at path.
func NewNodeTokenAuthenticator(path string) *NodeTokenAuthenticator {
	return &NodeTokenAuthenticator{path: path}
}

// Authenticate implements Authenticator.
func (a *NodeTokenAuthenticator) Authenticate(r *http.Request) (*User, bool, error) {
	auth := r.Header.Get("Authorization")
	scheme, got, ok := strings.Cut(auth, " ")
	got = strings.TrimSpace(got)
	if !ok || !strings.EqualFold(scheme, "bearer") || !strings.HasPrefix(got, "nvt1.") {
		return nil, false, nil
	}
	want := a.load()
	if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return nil, false, nil
	}
	return &User{Name: NodeTokenUser, Groups: []string{"system:nodes", "system:authenticated"}}, true, nil
}

func (a *NodeTokenAuthenticator) load() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == "" {
		if b, err := os.ReadFile(a.path); err == nil {
			a.token = strings.TrimSpace(string(b))
		}
	}
	return a.token
}
