package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	sigsjson "sigs.k8s.io/json"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage"
)

// maxUpdateRetries bounds how often an update without a resourceVersion
// precondition is retried after losing a race with another writer.
const maxUpdateRetries = 10

func dryRun(r *http.Request) (bool, error) {
	vals := r.URL.Query()["dryRun"]
	for _, v := range vals {
		if v != "All" {
			return false, badRequest("dryRun: Unsupported value: %q: supported values: \"All\"", v)
		}
	}
	return len(vals) > 0, nil
}

// respond writes obj (an object of res) with its type meta, in the
// encoding the client asked for.
func respond(w http.ResponseWriter, r *http.Request, res *registry.Resource, code int, obj runtime.Object, warnings []string) {
	setTypeMeta(res, obj)
	addWarnings(w, warnings)
	writeObject(w, r, res, code, obj)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, req request) {
	if req.res.Namespaced && req.namespace == "" {
		writeStatusFor(w, r, apierrors.NewMethodNotSupported(req.res.GVR().GroupResource(), "create"))
		return
	}
	dry, err := dryRun(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	mode, err := parseFieldValidation(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	data, err := readBody(r, req.res.New)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	obj, warnings, err := decodeObject(req.res, data, mode)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	out, err := s.Create(r.Context(), req.res, req.namespace, obj, dry)
	if err != nil {
		name := ""
		if m, merr := meta.Accessor(obj); merr == nil {
			name = m.GetName()
		}
		writeErrorFor(w, r, err, req.res, name)
		return
	}
	respond(w, r, req.res, http.StatusCreated, out, warnings)
}

// Create stores a new object of res in namespace ns after defaulting,
// validation and admission; it is also how the server makes its own objects.
func (s *Server) Create(ctx context.Context, res *registry.Resource, ns string, obj runtime.Object, dry bool) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if res.Namespaced {
		switch {
		case m.GetNamespace() == "":
			m.SetNamespace(ns)
		case ns != "" && m.GetNamespace() != ns:
			return nil, badRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
	} else {
		m.SetNamespace("")
	}
	if res.Default != nil {
		res.Default(obj)
	}
	prepareCreateMeta(res, obj, m)
	if res.PrepareForCreate != nil {
		res.PrepareForCreate(obj)
	}
	if err := s.admit(ctx, res, obj); err != nil {
		return nil, err
	}
	errs := validateMeta(res, m, nil)
	if res.Validate != nil {
		errs = append(errs, res.Validate(obj, nil)...)
	}
	if len(errs) > 0 {
		return nil, invalid(res, m.GetName(), errs)
	}
	if err := s.admitCreate(ctx, res, m); err != nil {
		return nil, err
	}
	if dry {
		return obj, nil
	}
	undo := func() {}
	if h := s.hooks(res); h != nil {
		if undo, err = h.BeforeCreate(ctx, obj); err != nil {
			return nil, err
		}
	}
	data, err := s.encode(res, obj)
	if err != nil {
		undo()
		return nil, err
	}
	rev, err := s.store.Create(ctx, s.key(res, m.GetNamespace(), m.GetName()), data)
	if err != nil {
		undo()
		return nil, statusError(err, res, m.GetName())
	}
	s.noteWrite(rev)
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	return obj, nil
}

func (s *Server) hooks(res *registry.Resource) WriteHooks {
	if s.cfg.Hooks == nil {
		return nil
	}
	return s.cfg.Hooks[res.Group+"/"+res.StorageName()]
}

// admitCreate refuses objects in namespaces that do not exist or are being
// deleted, as upstream's NamespaceLifecycle admission does.
func (s *Server) admitCreate(ctx context.Context, res *registry.Resource, m metav1.Object) error {
	if !res.Namespaced {
		return nil
	}
	nsRes := s.lookup("", "v1", "namespaces")
	if nsRes == nil {
		return nil
	}
	if err := s.waitForVersion(ctx, ""); err != nil {
		return err
	}
	e, _ := s.cache.Get(s.caches[nsRes], objectKey(nsRes, "", m.GetNamespace()))
	if e == nil {
		return apierrors.NewNotFound(nsRes.GVR().GroupResource(), m.GetNamespace())
	}
	if ns, ok := e.Object.(*corev1.Namespace); ok && (ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating) {
		return apierrors.NewForbidden(res.GVR().GroupResource(), m.GetName(),
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", m.GetNamespace()))
	}
	return nil
}

// immortalNamespace reports the namespaces the cluster itself needs, which
// upstream's NamespaceLifecycle admission refuses to delete.
func immortalNamespace(name string) bool {
	switch name {
	case metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic:
		return true
	}
	return false
}

// updateMode says which part of an object an update may change.
type updateMode int

const (
	updateMain     updateMode = iota // spec and metadata; status is kept
	updateStatus                     // status only
	updateFinalize                   // a namespace's spec.finalizers only
	updateSystem                     // server-internal transitions (binding, deletion), validated by the caller
)

func modeFor(sub string) updateMode {
	switch sub {
	case "status":
		return updateStatus
	case "finalize":
		return updateFinalize
	}
	return updateMain
}

// transform turns the current object (a private copy) into the desired one.
type transform func(current runtime.Object) (runtime.Object, error)

// Update applies fn to the current object of res and stores the result,
// retrying when another writer got there first, unless the desired object
// carries a resourceVersion precondition.
func (s *Server) Update(ctx context.Context, res *registry.Resource, ns, name string, mode updateMode, dry bool, fn transform) (runtime.Object, error) {
	key := s.key(res, ns, name)
	for attempt := 0; ; attempt++ {
		// The first try starts from the watch cache's copy (see cached);
		// a try that would end without writing is made again from the
		// store, so that no answer rests on a stale copy.
		current, revision, cached := s.cached(ctx, res, key, attempt)
		if !cached {
			var err error
			if current, revision, err = s.load(ctx, res, key); err != nil {
				return nil, statusError(err, res, name)
			}
		}
		obj, err := fn(current.DeepCopyObject())
		if err != nil {
			if cached {
				continue
			}
			return nil, err
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		precondition := m.GetResourceVersion()
		if precondition != "" && precondition != strconv.FormatInt(revision, 10) {
			if cached {
				continue
			}
			return nil, statusError(storage.ErrConflict, res, name)
		}
		// An update without a version is unconditional: it applies to the
		// current version, as upstream stamps it before validation.
		m.SetResourceVersion(strconv.FormatInt(revision, 10))
		if m.GetName() != name {
			return nil, badRequest("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), name)
		}
		if res.Namespaced && m.GetNamespace() != ns {
			if m.GetNamespace() != "" {
				return nil, badRequest("the namespace of the provided object does not match the namespace sent on the request")
			}
			m.SetNamespace(ns)
		}
		if uid := m.GetUID(); uid != "" && uid != current.(metav1.Object).GetUID() {
			if cached {
				continue
			}
			return nil, apierrors.NewConflict(res.GVR().GroupResource(), name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", uid, current.(metav1.Object).GetUID()))
		}
		obj, err = s.prepareUpdate(res, mode, obj, current)
		if err != nil {
			if cached {
				continue
			}
			return nil, err
		}
		m, _ = meta.Accessor(obj)
		data, err := s.encode(res, obj)
		if err != nil {
			return nil, err
		}
		old, _ := s.encode(res, current)
		if (string(data) == string(old) || dry) && cached {
			continue
		}
		if string(data) == string(old) || dry {
			// Nothing changed: upstream writes nothing and keeps the version.
			m.SetResourceVersion(strconv.FormatInt(revision, 10))
			return obj, nil
		}
		if m.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 && !namespaceFinalizing(obj) && !podTerminating(obj) {
			rev, err := s.store.Delete(ctx, key, revision)
			if err == nil {
				s.noteWrite(rev)
				s.afterDelete(ctx, res, obj)
				return obj, nil
			}
			if errors.Is(err, storage.ErrConflict) && (cached || precondition == "" && attempt < maxUpdateRetries) {
				continue
			}
			return nil, statusError(err, res, name)
		}
		undo := func() {}
		h := s.hooks(res)
		if h != nil && mode == updateMain {
			if undo, err = h.BeforeUpdate(ctx, obj, current); err != nil {
				if cached {
					continue
				}
				return nil, err
			}
			if data, err = s.encode(res, obj); err != nil {
				undo()
				return nil, err
			}
		}
		rev, err := s.store.Update(ctx, key, data, revision)
		if err != nil {
			undo()
			if errors.Is(err, storage.ErrConflict) && (cached || precondition == "" && attempt < maxUpdateRetries) {
				continue
			}
			return nil, statusError(err, res, name)
		}
		if h != nil && mode == updateMain {
			h.AfterUpdate(ctx, obj, current)
		}
		s.noteWrite(rev)
		m.SetResourceVersion(strconv.FormatInt(rev, 10))
		return obj, nil
	}
}

// cached returns a private copy of the watch cache's object at key and its
// revision, for the first try of a write (attempt 0), as upstream's
// GuaranteedUpdate starts from its cache: reading and decoding the object
// from the store cost as much as the write itself. A stale copy cannot do
// harm: the store refuses the write by its revision precondition, and the
// callers decide again from the store whatever they would answer without
// writing. ok is false when the cache cannot serve (a later attempt, no
// entry, a resource stored as another version).
func (s *Server) cached(ctx context.Context, res *registry.Resource, key string, attempt int) (obj runtime.Object, revision int64, ok bool) {
	if attempt > 0 || res.StoredAs != nil {
		return nil, 0, false
	}
	if err := s.waitForVersion(ctx, ""); err != nil {
		return nil, 0, false
	}
	e, _ := s.cache.Get(s.caches[res], key)
	if e == nil || e.Object == nil {
		return nil, 0, false
	}
	return e.Object.DeepCopyObject(), e.Revision, true
}

// namespaceFinalizing reports a namespace whose content is still being
// deleted (its spec.finalizers are not empty yet).
func namespaceFinalizing(obj runtime.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.Spec.Finalizers) > 0
}

// podTerminating reports a pod on a node in graceful termination: the
// node's kubelet deletes it when its containers have stopped.
func podTerminating(obj runtime.Object) bool {
	p, ok := obj.(*corev1.Pod)
	return ok && p.Spec.NodeName != "" && p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds > 0
}

// prepareUpdate applies the server's rules for the update mode.
func (s *Server) prepareUpdate(res *registry.Resource, mode updateMode, obj, current runtime.Object) (runtime.Object, error) {
	m, _ := meta.Accessor(obj)
	cm, _ := meta.Accessor(current)
	switch mode {
	case updateStatus:
		out := current.DeepCopyObject()
		setStatus(out, statusOf(obj))
		if res.ValidateStatus != nil {
			if errs := res.ValidateStatus(out, current); len(errs) > 0 {
				return nil, invalid(res, m.GetName(), errs)
			}
		}
		return out, nil
	case updateFinalize:
		out := current.DeepCopyObject().(*corev1.Namespace)
		out.Spec.Finalizers = obj.(*corev1.Namespace).Spec.Finalizers
		return out, nil
	case updateSystem:
		return obj, nil
	}
	keepServerMeta(m, cm)
	if res.Status {
		setStatus(obj, statusOf(current))
	}
	if res.PrepareForUpdate != nil {
		res.PrepareForUpdate(obj, current)
	}
	if res.Default != nil {
		res.Default(obj)
	}
	if hasSpec(obj) && specChanged(obj, current) {
		m.SetGeneration(cm.GetGeneration() + 1)
	}
	errs := validateMeta(res, m, cm)
	if res.Validate != nil {
		errs = append(errs, res.Validate(obj, current)...)
	}
	if len(errs) > 0 {
		return nil, invalid(res, m.GetName(), errs)
	}
	return obj, nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, req request) {
	dry, err := dryRun(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	mode, err := parseFieldValidation(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	data, err := readBody(r, req.res.New)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	obj, warnings, err := decodeObject(req.res, data, mode)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	out, err := s.Update(r.Context(), req.res, req.namespace, req.name, modeFor(req.subresource), dry,
		func(runtime.Object) (runtime.Object, error) { return obj, nil })
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	respond(w, r, req.res, http.StatusOK, out, warnings)
}

// applyPatch applies a patch of the request's content type to a JSON document.
// schema is an empty object of the document's type (strategic merge needs it).
func applyPatch(r *http.Request, original, patch []byte, schema interface{}) ([]byte, error) {
	switch ct := r.Header.Get("Content-Type"); ct {
	case string(types.JSONPatchType):
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, badRequest("invalid JSON patch: %v", err)
		}
		out, err := p.Apply(original)
		if err != nil {
			return nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity,
				Reason: metav1.StatusReasonInvalid, Message: fmt.Sprintf("the server rejected our request due to an error in our request: %v", err)}}
		}
		return out, nil
	case string(types.MergePatchType):
		out, err := jsonpatch.MergePatch(original, patch)
		if err != nil {
			return nil, badRequest("invalid merge patch: %v", err)
		}
		return out, nil
	case string(types.StrategicMergePatchType):
		out, err := strategicpatch.StrategicMergePatch(original, patch, schema)
		if err != nil {
			return nil, badRequest("invalid strategic merge patch: %v", err)
		}
		return out, nil
	case string(types.ApplyYAMLPatchType), string(types.ApplyCBORPatchType):
		return nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason: metav1.StatusReasonUnsupportedMediaType, Message: "server-side apply is not supported yet; use client-side kubectl apply"}}
	default:
		return nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason: metav1.StatusReasonUnsupportedMediaType, Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got %q", ct)}}
	}
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, req request) {
	dry, err := dryRun(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	mode, err := parseFieldValidation(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	patch, err := readBody(r, nil)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	var warnings []string
	out, err := s.Update(r.Context(), req.res, req.namespace, req.name, modeFor(req.subresource), dry,
		func(current runtime.Object) (runtime.Object, error) {
			// The patch applies to the current object without its version, so
			// the result is conditional only if the patch itself names a
			// resourceVersion; otherwise a concurrent write means a retry,
			// not a conflict, as upstream.
			if m, err := meta.Accessor(current); err == nil {
				m.SetResourceVersion("")
			}
			original, err := json.Marshal(current)
			if err != nil {
				return nil, err
			}
			patched, err := applyPatch(r, original, patch, req.res.New())
			if err != nil {
				return nil, err
			}
			obj, warns, err := decodeObject(req.res, patched, mode)
			warnings = warns
			return obj, err
		})
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	respond(w, r, req.res, http.StatusOK, out, warnings)
}

// deleteOptions reads DeleteOptions from the body or the query.
func deleteOptions(r *http.Request) (metav1.DeleteOptions, error) {
	var opts metav1.DeleteOptions
	data, err := readBody(r, func() runtime.Object { return &metav1.DeleteOptions{} })
	if err != nil {
		return opts, err
	}
	if len(data) > 0 {
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &opts); err != nil {
			return opts, badRequest("invalid DeleteOptions: %v", err)
		}
	}
	q := r.URL.Query()
	if v := q.Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return opts, badRequest("invalid gracePeriodSeconds %q", v)
		}
		opts.GracePeriodSeconds = &n
	}
	if v := q.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if q.Has("dryRun") {
		opts.DryRun = q["dryRun"]
	}
	for _, v := range opts.DryRun {
		if v != "All" {
			return opts, badRequest("dryRun: Unsupported value: %q", v)
		}
	}
	if p := opts.PropagationPolicy; p != nil {
		switch *p {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return opts, badRequest("propagationPolicy: Unsupported value: %q", *p)
		}
	}
	return opts, nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, req request) {
	opts, err := deleteOptions(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	out, err := s.Delete(r.Context(), req.res, req.namespace, req.name, opts)
	if err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	respond(w, r, req.res, http.StatusOK, out, nil)
}

// Delete deletes an object, or starts its deletion: an object with finalizers,
// a namespace, a pod on a node, or a delete with foreground or orphan
// propagation gets a deletionTimestamp and is removed when its finalizers are.
func (s *Server) Delete(ctx context.Context, res *registry.Resource, ns, name string, opts metav1.DeleteOptions) (runtime.Object, error) {
	if res.Group == "" && res.Plural == "namespaces" && immortalNamespace(name) {
		return nil, apierrors.NewForbidden(res.GVR().GroupResource(), name, fmt.Errorf("this namespace may not be deleted"))
	}
	dry := len(opts.DryRun) > 0
	key := s.key(res, ns, name)
	for attempt := 0; ; attempt++ {
		// As in Update: the cache's copy first, the store's for any answer
		// that writes nothing.
		current, revision, cached := s.cached(ctx, res, key, attempt)
		if !cached {
			var err error
			if current, revision, err = s.load(ctx, res, key); err != nil {
				return nil, statusError(err, res, name)
			}
		}
		obj := current.DeepCopyObject()
		m, _ := meta.Accessor(obj)
		if pc := opts.Preconditions; pc != nil && cached &&
			(pc.UID != nil && *pc.UID != m.GetUID() || pc.ResourceVersion != nil && *pc.ResourceVersion != m.GetResourceVersion()) {
			continue
		}
		if pc := opts.Preconditions; pc != nil {
			if pc.UID != nil && *pc.UID != m.GetUID() {
				return nil, apierrors.NewConflict(res.GVR().GroupResource(), name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *pc.UID, m.GetUID()))
			}
			if pc.ResourceVersion != nil && *pc.ResourceVersion != m.GetResourceVersion() {
				return nil, apierrors.NewConflict(res.GVR().GroupResource(), name, fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *pc.ResourceVersion, m.GetResourceVersion()))
			}
		}
		graceful, changed := startDeletion(obj, m, opts)
		if graceful {
			if (dry || !changed) && cached {
				continue
			}
			if dry || !changed {
				return obj, nil
			}
			data, err := s.encode(res, obj)
			if err != nil {
				return nil, err
			}
			rev, err := s.store.Update(ctx, key, data, revision)
			if errors.Is(err, storage.ErrConflict) && (cached || attempt < maxUpdateRetries) {
				continue
			}
			if err != nil {
				return nil, statusError(err, res, name)
			}
			s.noteWrite(rev)
			m.SetResourceVersion(strconv.FormatInt(rev, 10))
			return obj, nil
		}
		if dry && cached {
			continue
		}
		if dry {
			return obj, nil
		}
		rev, err := s.store.Delete(ctx, key, revision)
		if errors.Is(err, storage.ErrConflict) && (cached || attempt < maxUpdateRetries) {
			continue
		}
		if err != nil {
			return nil, statusError(err, res, name)
		}
		s.noteWrite(rev)
		s.afterDelete(ctx, res, obj)
		return obj, nil
	}
}

func (s *Server) afterDelete(ctx context.Context, res *registry.Resource, obj runtime.Object) {
	if h := s.hooks(res); h != nil {
		h.AfterDelete(ctx, obj)
	}
}

// startDeletion decides whether deleting obj is graceful (the object stays,
// marked for deletion) and marks it; changed reports whether obj was modified.
func startDeletion(obj runtime.Object, m metav1.Object, opts metav1.DeleteOptions) (graceful, changed bool) {
	now := metav1.NewTime(time.Now())
	mark := func(grace int64) {
		if m.GetDeletionTimestamp() == nil {
			ts := metav1.NewTime(now.Add(time.Duration(grace) * time.Second))
			m.SetDeletionTimestamp(&ts)
			m.SetDeletionGracePeriodSeconds(&grace)
			changed = true
		}
	}
	addFinalizer := func(f string) {
		for _, have := range m.GetFinalizers() {
			if have == f {
				return
			}
		}
		m.SetFinalizers(append(m.GetFinalizers(), f))
		changed = true
	}
	if p := opts.PropagationPolicy; p != nil && m.GetDeletionTimestamp() == nil {
		switch *p {
		case metav1.DeletePropagationForeground:
			addFinalizer(metav1.FinalizerDeleteDependents)
		case metav1.DeletePropagationOrphan:
			addFinalizer(metav1.FinalizerOrphanDependents)
		}
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		if len(o.Spec.Finalizers) > 0 || len(o.Finalizers) > 0 {
			mark(0)
			if o.Status.Phase != corev1.NamespaceTerminating {
				o.Status.Phase = corev1.NamespaceTerminating
				changed = true
			}
			return true, changed
		}
	case *corev1.Pod:
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if o.Spec.TerminationGracePeriodSeconds != nil {
			grace = *o.Spec.TerminationGracePeriodSeconds
		}
		if opts.GracePeriodSeconds != nil {
			grace = *opts.GracePeriodSeconds
		}
		running := o.Spec.NodeName != "" && o.Status.Phase != corev1.PodSucceeded && o.Status.Phase != corev1.PodFailed
		if running && grace > 0 {
			if cur := o.DeletionGracePeriodSeconds; cur != nil && grace < *cur {
				// A shorter grace period replaces a longer one, as upstream.
				ts := metav1.NewTime(now.Add(time.Duration(grace) * time.Second))
				o.DeletionTimestamp, o.DeletionGracePeriodSeconds = &ts, &grace
				changed = true
			}
			mark(grace)
			return true, changed
		}
	}
	if len(m.GetFinalizers()) > 0 {
		mark(0)
		return true, changed
	}
	return false, false
}

func (s *Server) deleteCollection(w http.ResponseWriter, r *http.Request, req request) {
	opts, err := deleteOptions(r)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	sel, err := s.parseSelector(r, req.res)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	if err := s.waitForVersion(r.Context(), ""); err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	entries, _, _ := s.cache.List(s.caches[req.res], s.prefix(req.res, req.namespace), "", 0, sel.matches)
	for _, e := range entries {
		if _, err := s.Delete(r.Context(), req.res, e.Namespace, e.Name, opts); err != nil && !apierrors.IsNotFound(err) {
			writeErrorFor(w, r, err, req.res, e.Name)
			return
		}
	}
	writeJSON(w, http.StatusOK, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess})
}
