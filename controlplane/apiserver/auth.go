package apiserver

import (
	"context"
	"net/http"
)

// User is who made a request, as an authenticator established it.
type User struct {
	Name   string
	Groups []string
}

// Authenticator identifies the user of a request. ok is false when the request
// carries no credentials this authenticator understands.
type Authenticator interface {
	Authenticate(r *http.Request) (user *User, ok bool, err error)
}

// Authorizer decides whether user may perform verb on a resource. The seam
// RBAC plugs into later.
type Authorizer interface {
	Authorize(ctx context.Context, user *User, verb string, req request) (allowed bool, reason string)
}

// ClientCertAuthenticator trusts client certificates the TLS layer verified
// against the cluster CA: the common name is the user, organizations the groups.
type ClientCertAuthenticator struct{}

// Authenticate implements Authenticator.
func (ClientCertAuthenticator) Authenticate(r *http.Request) (*User, bool, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, false, nil
	}
	cert := r.TLS.VerifiedChains[0][0]
	return &User{Name: cert.Subject.CommonName, Groups: append([]string{"system:authenticated"}, cert.Subject.Organization...)}, true, nil
}

// AllowAuthenticated lets every authenticated user do everything, until RBAC
// is enforced.
type AllowAuthenticated struct{}

// Authorize implements Authorizer.
func (AllowAuthenticated) Authorize(context.Context, *User, string, request) (bool, string) {
	return true, ""
}

type userKey struct{}

func withUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// userFrom returns the authenticated user of a request context.
func userFrom(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}
