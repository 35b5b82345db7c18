package images

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize returns ref in the full form the store records, as docker and
// containerd spell it: registry/repository:tag or registry/repository@digest,
// with docker.io/library/ and :latest filled in where ref omits them.
func Normalize(ref string) (string, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	registry := r.Context().RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	base := registry + "/" + r.Context().RepositoryStr()
	switch t := r.(type) {
	case name.Digest:
		return base + "@" + t.DigestStr(), nil
	case name.Tag:
		return base + ":" + t.TagStr(), nil
	}
	return "", fmt.Errorf("image reference %q: neither a tag nor a digest", ref)
}

// splitRef splits a normalized reference into its repository and its tag or
// digest, and says which it is.
func splitRef(ref string) (repo, tagOrDigest string, isDigest bool) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:], true
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:], false
	}
	return ref, "", false
}
