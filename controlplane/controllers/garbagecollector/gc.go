// Package garbagecollector deletes objects whose owners are gone, following
// ownerReferences as upstream: background deletion removes dependents after
// their owner; an owner with the foregroundDeletion finalizer stays until its
// blocking dependents are gone; one with the orphan finalizer lets its
// dependents go free. It knows the built-in owner and dependent kinds the
// controllers create (the workloads, their pods, replica sets, revisions,
// jobs and endpoint slices).
package garbagecollector

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// kind is one kind the collector follows, as owner, dependent, or both.
type kind struct {
	name      string // Kind, e.g. ReplicaSet
	gvr       schema.GroupVersionResource
	informer  cache.SharedIndexInformer
	dependent bool // objects of this kind may be collected
}

// Collector is the garbage collector.
type Collector struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	dyn     dynamic.Interface
	kinds   map[string]*kind // by Kind
	queue   workqueue.TypedRateLimitingInterface[item]

	mu         sync.Mutex
	dependents map[types.UID]map[item]bool // owner uid -> its dependents
}

// item names one object: its kind, namespace and name.
type item struct{ kind, ns, name string }

// New returns the collector.
func New(client kubernetes.Interface, dyn dynamic.Interface, factory informers.SharedInformerFactory) *Collector {
	return &Collector{client: client, factory: factory, dyn: dyn, kinds: map[string]*kind{}, dependents: map[types.UID]map[item]bool{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[item](),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: "garbagecollector"})}
}

const (
	deleteDependents = metav1.FinalizerDeleteDependents // foregroundDeletion
	orphanDependents = metav1.FinalizerOrphanDependents // orphan
)

func (c *Collector) register(f informers.SharedInformerFactory) {
	add := func(name, group, resource string, inf cache.SharedIndexInformer, dependent bool) {
		c.kinds[name] = &kind{name: name, gvr: schema.GroupVersionResource{Group: group, Version: "v1", Resource: resource}, informer: inf, dependent: dependent}
	}
	add("Pod", "", "pods", f.Core().V1().Pods().Informer(), true)
	add("ReplicationController", "", "replicationcontrollers", f.Core().V1().ReplicationControllers().Informer(), true)
	add("Service", "", "services", f.Core().V1().Services().Informer(), false)
	add("PersistentVolumeClaim", "", "persistentvolumeclaims", f.Core().V1().PersistentVolumeClaims().Informer(), true)
	add("ReplicaSet", "apps", "replicasets", f.Apps().V1().ReplicaSets().Informer(), true)
	add("Deployment", "apps", "deployments", f.Apps().V1().Deployments().Informer(), true)
	add("StatefulSet", "apps", "statefulsets", f.Apps().V1().StatefulSets().Informer(), true)
	add("DaemonSet", "apps", "daemonsets", f.Apps().V1().DaemonSets().Informer(), true)
	add("ControllerRevision", "apps", "controllerrevisions", f.Apps().V1().ControllerRevisions().Informer(), true)
	add("Job", "batch", "jobs", f.Batch().V1().Jobs().Informer(), true)
	add("CronJob", "batch", "cronjobs", f.Batch().V1().CronJobs().Informer(), true)
	add("EndpointSlice", "discovery.k8s.io", "endpointslices", f.Discovery().V1().EndpointSlices().Informer(), true)
}

func (c *Collector) resource(k *kind, ns string) dynamic.ResourceInterface {
	return c.dyn.Resource(k.gvr).Namespace(ns)
}

// Run works until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	factory := c.factory
	c.register(factory)
	var synced []cache.InformerSynced
	for name, k := range c.kinds {
		name := name
		k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj interface{}) { c.observe(name, obj, false) },
			UpdateFunc: func(_, obj interface{}) { c.observe(name, obj, false) },
			DeleteFunc: func(obj interface{}) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				c.observe(name, obj, true)
			},
		})
		synced = append(synced, k.informer.HasSynced)
	}
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	return workloop.Run(ctx, "garbagecollector", c.queue, 4, c.sync, synced...)
}

// observe indexes an object's owners and queues what its change concerns:
// the object itself, and the dependents of it when it went or is going.
func (c *Collector) observe(kindName string, obj interface{}, deleted bool) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	it := item{kind: kindName, ns: m.GetNamespace(), name: m.GetName()}
	c.mu.Lock()
	for _, ref := range m.GetOwnerReferences() {
		set := c.dependents[ref.UID]
		if set == nil {
			set = map[item]bool{}
			c.dependents[ref.UID] = set
		}
		if deleted {
			delete(set, it)
		} else {
			set[it] = true
		}
	}
	var deps []item
	if deleted || m.GetDeletionTimestamp() != nil {
		for d := range c.dependents[m.GetUID()] {
			deps = append(deps, d)
		}
	}
	if deleted {
		delete(c.dependents, m.GetUID())
	}
	c.mu.Unlock()
	if !deleted && (len(m.GetOwnerReferences()) > 0 || m.GetDeletionTimestamp() != nil) {
		c.queue.Add(it)
	}
	for _, d := range deps {
		c.queue.Add(d)
	}
}

// get returns the current object of a kind, or nil.
func (c *Collector) get(kindName, ns, name string) metav1.Object {
	k := c.kinds[kindName]
	if k == nil {
		return nil
	}
	key := name
	if ns != "" {
		key = ns + "/" + name
	}
	obj, ok, err := k.informer.GetStore().GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	m, _ := meta.Accessor(obj.(runtime.Object))
	return m
}

// ownerState is what became of one owner reference.
type ownerState int

const (
	ownerAlive ownerState = iota
	ownerGone
	ownerUnknown   // a kind the collector does not follow
	ownerDeleting  // deleting with foregroundDeletion
	ownerOrphaning // deleting with orphan
)

// ownerOf says what became of an owner, from the cache or, when live is
// set, from the API server itself: a cache can show an owner's deletion
// before the change that freed its dependents, so nothing is deleted on the
// cache's word alone.
func (c *Collector) ownerOf(ctx context.Context, ns string, ref metav1.OwnerReference, live bool) (ownerState, error) {
	k := c.kinds[ref.Kind]
	if k == nil {
		return ownerUnknown, nil
	}
	var o metav1.Object
	if live {
		u, err := c.resource(k, ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return ownerUnknown, err
		}
		if err == nil {
			o = u
		}
	} else {
		o = c.get(ref.Kind, ns, ref.Name)
	}
	if o == nil || o.GetUID() != ref.UID {
		return ownerGone, nil
	}
	if o.GetDeletionTimestamp() != nil {
		for _, f := range o.GetFinalizers() {
			switch f {
			case deleteDependents:
				return ownerDeleting, nil
			case orphanDependents:
				return ownerOrphaning, nil
			}
		}
	}
	return ownerAlive, nil
}

func (c *Collector) sync(ctx context.Context, it item) error {
	k := c.kinds[it.kind]
	obj := c.get(it.kind, it.ns, it.name)
	if obj == nil {
		return nil
	}
	// As an owner: finish foreground deletion and orphaning.
	if obj.GetDeletionTimestamp() != nil {
		if err := c.finishOwner(ctx, k, obj); err != nil {
			return err
		}
	}
	if len(obj.GetOwnerReferences()) == 0 || !k.dependent {
		return nil
	}
	verdict, _, err := c.judge(ctx, obj, false)
	if err != nil || verdict == keepIt {
		return err
	}
	// Confirm with the live object and live owners before acting.
	u, err := c.resource(k, it.ns).Get(ctx, it.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	verdict, keep, err := c.judge(ctx, u, true)
	switch {
	case err != nil:
		return err
	case verdict == dropRefs:
		return c.patchMeta(ctx, k, u, "ownerReferences", keep)
	case verdict == keepIt || u.GetDeletionTimestamp() != nil:
		return nil
	}
	policy := metav1.DeletePropagationBackground
	if verdict == deleteForeground {
		policy = metav1.DeletePropagationForeground
	}
	uid := u.GetUID()
	err = c.resource(k, it.ns).Delete(ctx, it.name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// verdict is what to do with a dependent.
type verdict int

const (
	keepIt           verdict = iota
	dropRefs                 // some owners are gone: keep only the others
	deleteBackground         // every owner is gone
	deleteForeground         // its owners are being deleted in the foreground
)

func (c *Collector) judge(ctx context.Context, obj metav1.Object, live bool) (verdict, []metav1.OwnerReference, error) {
	refs := obj.GetOwnerReferences()
	if len(refs) == 0 {
		return keepIt, nil, nil // an orphan by choice (or just orphaned) stays
	}
	var keep []metav1.OwnerReference
	alive, foreground := false, false
	for _, ref := range refs {
		state, err := c.ownerOf(ctx, obj.GetNamespace(), ref, live)
		if err != nil {
			return keepIt, nil, err
		}
		switch state {
		case ownerAlive, ownerUnknown, ownerOrphaning:
			// An orphaning owner removes its reference itself.
			alive = true
			keep = append(keep, ref)
		case ownerDeleting:
			foreground = true
			keep = append(keep, ref)
		}
	}
	switch {
	case alive && len(keep) < len(refs):
		return dropRefs, keep, nil
	case alive:
		return keepIt, nil, nil
	case foreground:
		return deleteForeground, nil, nil
	}
	return deleteBackground, nil, nil
}

// finishOwner completes an owner's deletion finalizer once its dependents
// allow: orphaning frees them; foreground waits until blocking ones are gone.
func (c *Collector) finishOwner(ctx context.Context, k *kind, owner metav1.Object) error {
	has := func(f string) bool {
		for _, x := range owner.GetFinalizers() {
			if x == f {
				return true
			}
		}
		return false
	}
	if !has(orphanDependents) && !has(deleteDependents) {
		return nil
	}
	// The dependents are listed live, not from the cache: a dependent made
	// just before its owner's deletion may not be in the cache yet, and
	// missing it here would orphan nothing or delete out of order.
	deps, err := c.liveDependents(ctx, owner)
	if err != nil {
		return err
	}
	remaining := 0
	for _, ld := range deps {
		d, dep := ld.item, ld.obj
		var keep []metav1.OwnerReference
		var mine *metav1.OwnerReference
		for _, ref := range dep.GetOwnerReferences() {
			if ref.UID == owner.GetUID() {
				ref := ref
				mine = &ref
				continue
			}
			keep = append(keep, ref)
		}
		if mine == nil {
			continue
		}
		if has(orphanDependents) {
			if err := c.patchMeta(ctx, c.kinds[d.kind], dep, "ownerReferences", keep); err != nil {
				return err
			}
			continue
		}
		if mine.BlockOwnerDeletion != nil && *mine.BlockOwnerDeletion {
			remaining++
			if dep.GetDeletionTimestamp() == nil {
				c.queue.Add(d) // it sees its owner deleting in foreground and goes
			}
		}
	}
	if remaining > 0 {
		return fmt.Errorf("%s %s/%s waits for %d dependents", k.name, owner.GetNamespace(), owner.GetName(), remaining)
	}
	var rest []string
	for _, f := range owner.GetFinalizers() {
		if f != orphanDependents && f != deleteDependents {
			rest = append(rest, f)
		}
	}
	return c.patchMeta(ctx, k, owner, "finalizers", rest)
}

// liveDependent is a dependent read from the API server.
type liveDependent struct {
	item item
	obj  metav1.Object
}

// liveDependents lists, from the API server, the objects of the followed
// kinds in owner's namespace that name it as an owner.
func (c *Collector) liveDependents(ctx context.Context, owner metav1.Object) ([]liveDependent, error) {
	var out []liveDependent
	for _, k := range c.kinds {
		if !k.dependent {
			continue
		}
		list, err := c.resource(k, owner.GetNamespace()).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list %s in %q: %w", k.gvr.Resource, owner.GetNamespace(), err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			for _, ref := range u.GetOwnerReferences() {
				if ref.UID == owner.GetUID() {
					out = append(out, liveDependent{item: item{kind: k.name, ns: u.GetNamespace(), name: u.GetName()}, obj: u})
					break
				}
			}
		}
	}
	return out, nil
}

// patchMeta sets one metadata field of obj with a merge patch guarded by
// its uid, so a newer object of the same name is never touched.
func (c *Collector) patchMeta(ctx context.Context, k *kind, obj metav1.Object, field string, value interface{}) error {
	if k == nil {
		return nil
	}
	if reflect.ValueOf(value).IsNil() {
		value = []interface{}{} // an empty list, not null: null would delete differently
	}
	data, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{field: value, "uid": obj.GetUID()}})
	_, err := c.resource(k, obj.GetNamespace()).Patch(ctx, obj.GetName(), types.MergePatchType, data, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	// A conflict (the object was replaced) is retried: the next sync reads
	// the live state again.
	return err
}
