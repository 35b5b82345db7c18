package images

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"runtime"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Auth is registry credentials as CRI's AuthConfig carries them.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 of username:password
	IdentityToken string
	RegistryToken string
}

func (a *Auth) authenticator() authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	})
}

// Pull fetches ref over the OCI distribution protocol and stores it (for a
// multi-platform image, the linux image of this machine's architecture). It
// returns the image id. Registries named in insecure (host or host:port) are
// reached over plain HTTP, or HTTPS without certificate verification; as in
// go-containerregistry and docker, loopback registries are also tried over
// HTTP.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth, insecure []string) (string, error) {
	norm, err := Normalize(ref)
	if err != nil {
		return "", err
	}
	parsed, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	transport := remote.DefaultTransport
	for _, host := range insecure {
		if host == parsed.Context().RegistryStr() {
			if parsed, err = name.ParseReference(ref, name.WeakValidation, name.Insecure); err != nil {
				return "", fmt.Errorf("pull %s: %w", ref, err)
			}
			t := remote.DefaultTransport.(*http.Transport).Clone()
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
			transport = t
			break
		}
	}
	img, err := remote.Image(parsed,
		remote.WithContext(ctx),
		remote.WithAuth(auth.authenticator()),
		remote.WithTransport(transport),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}

	// Blobs are fetched without the store lock, so that containers start
	// from other images meanwhile; they are marked pending so a concurrent
	// garbage collection in this process keeps them.
	var pending []string
	defer func() {
		s.mu.Lock()
		for _, h := range pending {
			if s.pending[h]--; s.pending[h] <= 0 {
				delete(s.pending, h)
			}
		}
		s.mu.Unlock()
	}()
	mark := func(h v1.Hash) {
		s.mu.Lock()
		s.pending[h.Hex]++
		s.mu.Unlock()
		pending = append(pending, h.Hex)
	}
	m, err := img.Manifest()
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	md, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	mark(md)
	mark(m.Config.Digest)
	for _, l := range m.Layers {
		mark(l.Digest)
	}
	desc, err := s.writeImage(img)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}

	unlock, err := s.lock(true)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have collected blobs meanwhile: check before
	// recording the image.
	for _, h := range pending {
		if !s.hasBlob(v1.Hash{Algorithm: "sha256", Hex: h}) {
			return "", fmt.Errorf("pull %s: blob sha256:%s removed during the pull; pull again", ref, h)
		}
	}
	idx, err := s.readIndex()
	if err != nil {
		return "", err
	}
	s.commit(idx, norm, desc.Descriptor)
	if err := s.writeIndex(idx); err != nil {
		return "", err
	}
	return desc.id, nil
}
