package apiserver

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// This file lets several versions of a resource share one storage: objects
// are kept in the stored version's type and converted on reads and writes of
// the others (see registry.StoredAs).

// stored returns the resource whose objects hold res's state.
func (s *Server) stored(res *registry.Resource) *registry.Resource {
	if res.StoredAs == nil {
		return res
	}
	return s.lookup(res.StoredAs.Group, res.StoredAs.Version, res.StoredAs.Plural)
}

func (s *Server) key(res *registry.Resource, ns, name string) string {
	return objectKey(s.stored(res), ns, name)
}

func (s *Server) prefix(res *registry.Resource, ns string) string {
	return keyPrefix(s.stored(res), ns)
}

// view returns a cached entry as res shows it.
func (s *Server) view(res *registry.Resource, e *cache.Entry) *cache.Entry {
	if res.StoredAs == nil || e == nil {
		return e
	}
	obj, err := res.StoredAs.FromStorage(e.Object.DeepCopyObject())
	if err == nil {
		var v *cache.Entry
		if v, err = newEntry(res, e.Key, obj, e.Revision); err == nil {
			return v
		}
	}
	// A stored object that cannot be shown in this version is shown as
	// stored rather than dropped, so no state becomes invisible.
	return e
}

func (s *Server) views(res *registry.Resource, entries []*cache.Entry) []*cache.Entry {
	if res.StoredAs == nil {
		return entries
	}
	out := make([]*cache.Entry, len(entries))
	for i, e := range entries {
		out[i] = s.view(res, e)
	}
	return out
}

// load reads the current object at key from the store, as res shows it.
func (s *Server) load(ctx context.Context, res *registry.Resource, key string) (runtime.Object, int64, error) {
	kv, err := s.store.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	e, err := decoder(s.stored(res))(key, kv.Value, kv.Revision)
	if err != nil {
		return nil, 0, err
	}
	obj := e.Object
	if res.StoredAs != nil {
		if obj, err = res.StoredAs.FromStorage(obj); err != nil {
			return nil, 0, fmt.Errorf("convert %s to %s: %w", key, res.GroupVersion(), err)
		}
		// Stamp the version and kind of res on the converted object.
		if _, err := newEntry(res, key, obj, kv.Revision); err != nil {
			return nil, 0, err
		}
	}
	return obj, kv.Revision, nil
}

// encode encodes an object of res as stored.
func (s *Server) encode(res *registry.Resource, obj runtime.Object) ([]byte, error) {
	if res.StoredAs == nil {
		return encodeForStorage(res, obj)
	}
	st, err := res.StoredAs.ToStorage(obj.DeepCopyObject())
	if err != nil {
		return nil, fmt.Errorf("convert to %s/%s: %w", res.StoredAs.Group, res.StoredAs.Version, err)
	}
	return encodeForStorage(s.stored(res), st)
}
