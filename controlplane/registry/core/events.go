package core

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func events() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "events", Singular: "event", Kind: "Event", Namespaced: true, ShortNames: []string{"ev"},
		New: func() runtime.Object { return &corev1.Event{} }, NewList: func() runtime.Object { return &corev1.EventList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			ev := obj.(*corev1.Event)
			if ns := ev.InvolvedObject.Namespace; ns != "" && ns != ev.Namespace {
				return field.ErrorList{field.Invalid(field.NewPath("involvedObject", "namespace"), ns, "does not match event.namespace")}
			}
			return nil
		},
		Columns: []metav1.TableColumnDefinition{
			{Name: "Last Seen", Type: "string", Description: "Time when this Event was last seen."},
			{Name: "Type", Type: "string", Description: "Type of this event (Normal, Warning)."},
			{Name: "Reason", Type: "string", Description: "Why the action was taken."},
			{Name: "Object", Type: "string", Description: "The object this Event is about."},
			{Name: "Subobject", Type: "string", Priority: 1, Description: "The subobject this Event is about."},
			{Name: "Source", Type: "string", Priority: 1, Description: "The component reporting this event."},
			{Name: "Message", Type: "string", Description: "A human-readable description of the status of this operation."},
			{Name: "First Seen", Type: "string", Priority: 1, Description: "The time at which the event was first recorded."},
			{Name: "Count", Type: "string", Priority: 1, Description: "The number of times this event has occurred."},
			{Name: "Name", Type: "string", Priority: 1, Format: "name", Description: "Name must be unique within a namespace."},
		},
		Row: func(obj runtime.Object) []interface{} {
			ev := obj.(*corev1.Event)
			last, first := ev.LastTimestamp, ev.FirstTimestamp
			if last.IsZero() {
				last = metav1.NewTime(ev.EventTime.Time)
			}
			if first.IsZero() {
				first = metav1.NewTime(ev.EventTime.Time)
			}
			if last.IsZero() {
				last = ev.CreationTimestamp
			}
			source := ev.Source.Component
			if source == "" {
				source = ev.ReportingController
			}
			if ev.Source.Host != "" {
				source += ", " + ev.Source.Host
			}
			count := ev.Count
			if ev.Series != nil {
				count = ev.Series.Count
			}
			object := strings.ToLower(ev.InvolvedObject.Kind) + "/" + ev.InvolvedObject.Name
			return []interface{}{registry.Age(last), ev.Type, ev.Reason, object, ev.InvolvedObject.FieldPath, source,
				strings.TrimSpace(ev.Message), registry.Age(first), count, ev.Name}
		},
		Fields: func(obj runtime.Object) fields.Set {
			ev := obj.(*corev1.Event)
			source := ev.Source.Component
			if source == "" {
				source = ev.ReportingController
			}
			return fields.Set{
				"involvedObject.kind": ev.InvolvedObject.Kind, "involvedObject.namespace": ev.InvolvedObject.Namespace,
				"involvedObject.name": ev.InvolvedObject.Name, "involvedObject.uid": string(ev.InvolvedObject.UID),
				"involvedObject.apiVersion": ev.InvolvedObject.APIVersion, "involvedObject.resourceVersion": ev.InvolvedObject.ResourceVersion,
				"involvedObject.fieldPath": ev.InvolvedObject.FieldPath, "reason": ev.Reason, "reportingComponent": ev.ReportingController,
				"source": source, "type": ev.Type,
			}
		},
	}
}
