package others

import (
	"strings"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func eventsV1() *registry.Resource {
	return &registry.Resource{Group: "events.k8s.io", Version: "v1", Plural: "events", Singular: "event", Kind: "Event", Namespaced: true, ShortNames: []string{"ev"},
		New: func() runtime.Object { return &eventsv1.Event{} }, NewList: func() runtime.Object { return &eventsv1.EventList{} },
		StoredAs: &registry.StoredAs{Group: "", Version: "v1", Plural: "events", ToStorage: EventToCore, FromStorage: EventFromCore},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			ev := obj.(*eventsv1.Event)
			if old != nil {
				return nil
			}
			// New events carry the structured fields (upstream requires them
			// for events.k8s.io/v1 writes).
			var errs field.ErrorList
			if ev.EventTime.IsZero() {
				errs = append(errs, field.Required(field.NewPath("eventTime"), ""))
			}
			if ev.ReportingController == "" {
				errs = append(errs, field.Required(field.NewPath("reportingController"), ""))
			}
			if ev.ReportingInstance == "" {
				errs = append(errs, field.Required(field.NewPath("reportingInstance"), ""))
			}
			if ev.Action == "" {
				errs = append(errs, field.Required(field.NewPath("action"), ""))
			}
			if ev.Reason == "" {
				errs = append(errs, field.Required(field.NewPath("reason"), ""))
			}
			if ev.Type != "Normal" && ev.Type != "Warning" {
				errs = append(errs, field.NotSupported(field.NewPath("type"), ev.Type, []string{"Normal", "Warning"}))
			}
			if ns := ev.Regarding.Namespace; ns != "" && ns != ev.Namespace {
				errs = append(errs, field.Invalid(field.NewPath("regarding", "namespace"), ns, "does not match event.namespace"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			{Name: "Last Seen", Type: "string", Description: "Time when this Event was last seen."},
			{Name: "Type", Type: "string", Description: "Type of this event (Normal, Warning)."},
			{Name: "Reason", Type: "string", Description: "Why the action was taken."},
			{Name: "Object", Type: "string", Description: "The object this Event is about."},
			{Name: "Message", Type: "string", Description: "A human-readable description of the status of this operation."},
		},
		Row: func(obj runtime.Object) []interface{} {
			ev := obj.(*eventsv1.Event)
			last := ev.DeprecatedLastTimestamp
			if ev.Series != nil {
				last = metav1.NewTime(ev.Series.LastObservedTime.Time)
			} else if last.IsZero() {
				last = metav1.NewTime(ev.EventTime.Time)
			}
			return []interface{}{registry.Age(last), ev.Type, ev.Reason, strings.ToLower(ev.Regarding.Kind) + "/" + ev.Regarding.Name, strings.TrimSpace(ev.Note)}
		},
	}
}
