package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	sigsjson "sigs.k8s.io/json"

	"github.com/navarch/navarch/controlplane/registry"
)

// scaleOf renders the autoscaling/v1 Scale view of an object.
func scaleOf(res *registry.Resource, obj runtime.Object) *autoscalingv1.Scale {
	m, _ := meta.Accessor(obj)
	spec, status, selector := res.Scale.Get(obj)
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: selector},
	}
}

// serveScale serves the scale subresource: reads render a Scale, writes
// change spec.replicas through an ordinary update of the object.
func (s *Server) serveScale(w http.ResponseWriter, r *http.Request, req request) {
	res := req.res
	if req.verb == "get" {
		if err := s.waitForVersion(r.Context(), r.URL.Query().Get("resourceVersion")); err != nil {
			writeError(w, err, res, req.name)
			return
		}
		e, _ := s.cache.Get(s.caches[res], s.key(res, req.namespace, req.name))
		e = s.view(res, e)
		if e == nil {
			writeError(w, apierrors.NewNotFound(res.GVR().GroupResource(), req.name), res, req.name)
			return
		}
		writeJSON(w, http.StatusOK, scaleOf(res, e.Object))
		return
	}
	if req.verb != "update" && req.verb != "patch" {
		writeStatus(w, apierrors.NewMethodNotSupported(res.GVR().GroupResource(), req.verb))
		return
	}
	dry, err := dryRun(r)
	if err != nil {
		writeError(w, err, res, req.name)
		return
	}
	var newBody func() runtime.Object
	if req.verb == "update" {
		newBody = func() runtime.Object { return &autoscalingv1.Scale{} }
	}
	body, err := readBody(r, newBody)
	if err != nil {
		writeError(w, err, res, req.name)
		return
	}
	out, err := s.Update(r.Context(), res, req.namespace, req.name, updateMain, dry, func(current runtime.Object) (runtime.Object, error) {
		cur := scaleOf(res, current)
		var want autoscalingv1.Scale
		if req.verb == "patch" {
			original, _ := json.Marshal(cur)
			patched, err := applyPatch(r, original, body, &autoscalingv1.Scale{})
			if err != nil {
				return nil, err
			}
			body = patched
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &want); err != nil {
			return nil, badRequest("invalid Scale: %v", err)
		}
		if want.Spec.Replicas < 0 {
			return nil, apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), req.name,
				fieldErrors("spec.replicas", want.Spec.Replicas, "must be greater than or equal to 0"))
		}
		m, _ := meta.Accessor(current)
		if want.ResourceVersion != "" {
			m.SetResourceVersion(want.ResourceVersion)
		} else {
			m.SetResourceVersion("")
		}
		res.Scale.SetReplicas(current, want.Spec.Replicas)
		return current, nil
	})
	if err != nil {
		writeError(w, err, res, req.name)
		return
	}
	writeJSON(w, http.StatusOK, scaleOf(res, out))
}

// bind assigns a pod to a node (pods/binding), as the scheduler does.
func (s *Server) bind(w http.ResponseWriter, r *http.Request, req request) {
	body, err := readBody(r, func() runtime.Object { return &corev1.Binding{} })
	if err != nil {
		writeError(w, err, req.res, req.name)
		return
	}
	var b corev1.Binding
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &b); err != nil {
		writeError(w, badRequest("invalid Binding: %v", err), req.res, req.name)
		return
	}
	if b.Target.Name == "" {
		writeError(w, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), b.Name,
			fieldErrors("target.name", "", "Required value")), req.res, req.name)
		return
	}
	dry, err := dryRun(r)
	if err != nil {
		writeError(w, err, req.res, req.name)
		return
	}
	_, err = s.Update(r.Context(), req.res, req.namespace, req.name, updateSystem, dry, func(current runtime.Object) (runtime.Object, error) {
		pod := current.(*corev1.Pod)
		if pod.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(req.res.GVR().GroupResource(), req.name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", req.name))
		}
		if pod.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(req.res.GVR().GroupResource(), req.name, fmt.Errorf("pod %s is already assigned to node %q", req.name, pod.Spec.NodeName))
		}
		if b.UID != "" && b.UID != pod.UID {
			return nil, apierrors.NewConflict(req.res.GVR().GroupResource(), req.name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", b.UID, pod.UID))
		}
		pod.Spec.NodeName = b.Target.Name
		setPodCondition(pod, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
		pod.ResourceVersion = ""
		return pod, nil
	})
	if err != nil {
		writeError(w, err, req.res, req.name)
		return
	}
	writeJSON(w, http.StatusCreated, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
}

func setPodCondition(pod *corev1.Pod, c corev1.PodCondition) {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == c.Type {
			pod.Status.Conditions[i] = c
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, c)
}
