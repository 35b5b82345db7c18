package apiserver

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/navarch/navarch/controlplane/registry"
)

// Admitter is one step of admission for creates. It runs after defaulting
// and before validation, as upstream's mutating admission does, so what it
// adds (default tolerations, a pod's priority) is validated like the rest.
// It may change obj in place or refuse it with an API status error
// (apierrors.NewForbidden and friends). Steps run in Config.Admission order.
type Admitter interface {
	// Name names the step in errors and logs, as upstream's plugin names
	// (e.g. "DefaultTolerationSeconds").
	Name() string
	// AdmitCreate sees every object being created; it ignores resources it
	// does not handle. r reads other objects (for example a PriorityClass).
	AdmitCreate(ctx context.Context, r Reader, res *registry.Resource, obj runtime.Object) error
}

// Reader reads objects as the server serves them, for admission steps.
type Reader interface {
	// Get returns a private copy of an object, or a NotFound status error.
	Get(ctx context.Context, group, version, plural, namespace, name string) (runtime.Object, error)
}

// Get reads an object from the watch cache, current with every write this
// server made, and returns a copy the caller may change.
func (s *Server) Get(ctx context.Context, group, version, plural, namespace, name string) (runtime.Object, error) {
	res := s.Resource(group, version, plural)
	if res == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: plural}, name)
	}
	if err := s.waitForVersion(ctx, ""); err != nil {
		return nil, err
	}
	e, _ := s.cache.Get(s.caches[res], s.key(res, namespace, name))
	e = s.view(res, e)
	if e == nil {
		return nil, apierrors.NewNotFound(res.GVR().GroupResource(), name)
	}
	return e.Object.DeepCopyObject(), nil
}

// admit runs the configured admission steps on an object being created.
func (s *Server) admit(ctx context.Context, res *registry.Resource, obj runtime.Object) error {
	for _, a := range s.cfg.Admission {
		if err := a.AdmitCreate(ctx, s, res, obj); err != nil {
			return err
		}
	}
	return nil
}
