package apiserver

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Lister is what an admission step needs besides Reader when it must look
// at every object of a kind (Priority admission looks for the globalDefault
// PriorityClass). The Reader a step is given implements it; steps assert it
// so that fakes in their tests need only what they use.
type Lister interface {
	// List returns private copies of the objects of a resource in namespace
	// ("" for all, or for cluster-scoped resources).
	List(ctx context.Context, group, version, plural, namespace string) ([]runtime.Object, error)
}

// List reads every object of a resource from the watch cache, current with
// every write this server made.
func (s *Server) List(ctx context.Context, group, version, plural, namespace string) ([]runtime.Object, error) {
	res := s.Resource(group, version, plural)
	if res == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: plural}, "")
	}
	if err := s.waitForVersion(ctx, ""); err != nil {
		return nil, err
	}
	entries, _, _ := s.cache.List(s.caches[res], s.prefix(res, namespace), "", 0, nil)
	entries = s.views(res, entries)
	out := make([]runtime.Object, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Object.DeepCopyObject())
	}
	return out, nil
}
