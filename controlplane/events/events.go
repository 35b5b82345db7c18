// Package events records Kubernetes Events (core/v1) for the control
// plane's components, as client-go's recorder does for upstream's: what
// `kubectl describe` and `kubectl get events` show. Recording is best
// effort: a lost event is logged at debug level and never fails the
// caller's work.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Recorder records the events of one component.
type Recorder struct {
	client kubernetes.Interface
	// component is the event's source and reporting controller, in
	// upstream's names ("job-controller", "default-scheduler").
	component string
}

// NewRecorder returns a recorder for component.
func NewRecorder(client kubernetes.Interface, component string) *Recorder {
	return &Recorder{client: client, component: component}
}

// Ref names an object an event is about.
func Ref(apiVersion, kind string, obj metav1.Object) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: apiVersion, Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(),
		UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion()}
}

// Event records an event of type typ (corev1.EventTypeNormal or Warning)
// on the object ref names.
func (r *Recorder) Event(ctx context.Context, ref corev1.ObjectReference, typ, reason, message string) {
	r.Emit(ctx, &corev1.Event{InvolvedObject: ref, Type: typ, Reason: reason, Message: message})
}

// Emit records ev after filling in what every event has: its name (the
// object's name and a nanosecond clock, as client-go names events), its
// namespace (the object's, or default for cluster-scoped objects, as
// upstream), timestamps, count, source and reporting controller.
func (r *Recorder) Emit(ctx context.Context, ev *corev1.Event) {
	now := metav1.NewTime(time.Now())
	ns := ev.InvolvedObject.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	ev.ObjectMeta = metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ev.InvolvedObject.Name, now.UnixNano()), Namespace: ns}
	ev.FirstTimestamp, ev.LastTimestamp, ev.Count = now, now, 1
	ev.Source = corev1.EventSource{Component: r.component}
	ev.ReportingController, ev.ReportingInstance = r.component, r.component
	if _, err := r.client.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		slog.Debug("cannot record event", "component", r.component, "object", ev.InvolvedObject.Kind+" "+ns+"/"+ev.InvolvedObject.Name,
			"reason", ev.Reason, "err", err)
	}
}
