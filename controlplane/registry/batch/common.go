package batch

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func int32p(n int32) *int32 { return &n }

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

// selectorString renders a selector for the SELECTOR column.
func selectorString(sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || sel == nil {
		return "<none>"
	}
	return s.String()
}
