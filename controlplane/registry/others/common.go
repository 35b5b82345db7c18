package others

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

var spec = field.NewPath("spec")

// createdAtColumns is the table of resources upstream shows with only a
// name and a creation time.
var createdAtColumns = []metav1.TableColumnDefinition{registry.NameColumn,
	{Name: "Created At", Type: "date", Description: "CreationTimestamp is a timestamp representing the server time when this object was created."}}

func createdAtRow(m metav1.Object) []interface{} {
	return []interface{}{m.GetName(), m.GetCreationTimestamp().UTC().Format("2006-01-02T15:04:05Z")}
}

// joinOrNone renders a list column, "<none>" when empty, at most n items.
func joinOrNone(items []string, n int) string {
	if len(items) == 0 {
		return "<none>"
	}
	if len(items) > n {
		return strings.Join(items[:n], ",") + fmt.Sprintf(" + %d more...", len(items)-n)
	}
	return strings.Join(items, ",")
}
