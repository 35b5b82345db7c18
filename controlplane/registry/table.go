package registry

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Age renders a timestamp as kubectl's AGE column does ("5m", "3d4h"), or
// "<unknown>" when the timestamp is unset.
func Age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

// NameColumn is the first column of every table.
var NameColumn = metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name",
	Description: "Name must be unique within a namespace."}

// AgeColumn is the conventional AGE column.
var AgeColumn = metav1.TableColumnDefinition{Name: "Age", Type: "string",
	Description: "CreationTimestamp is a timestamp representing the server time when this object was created."}

// SelectorColumn renders a label selector for SELECTOR columns and the scale
// subresource ("app=web,tier in (a,b)"), "<none>" when absent.
func SelectorColumn(sel *metav1.LabelSelector) string {
	if sel == nil {
		return "<none>"
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "<none>"
	}
	return s.String()
}
