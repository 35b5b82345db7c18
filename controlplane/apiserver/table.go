package apiserver

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// defaultColumns are served for resources without columns of their own, as
// upstream does.
var defaultColumns = []metav1.TableColumnDefinition{
	registry.NameColumn,
	{Name: "Created At", Type: "date", Description: "CreationTimestamp is a timestamp representing the server time when this object was created."},
}

// table renders entries as the Table `kubectl get` prints.
func (s *Server) table(res *registry.Resource, entries []*cache.Entry, include metav1.IncludeObjectPolicy) *metav1.Table {
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}}
	t.ColumnDefinitions = res.Columns
	if t.ColumnDefinitions == nil {
		t.ColumnDefinitions = defaultColumns
	}
	t.Rows = make([]metav1.TableRow, 0, len(entries))
	for _, e := range entries {
		m, err := meta.Accessor(e.Object)
		if err != nil {
			continue
		}
		var cells []interface{}
		if res.Row != nil && res.Columns != nil {
			cells = res.Row(e.Object)
		} else {
			cells = []interface{}{m.GetName(), m.GetCreationTimestamp().Time.UTC().Format(time.RFC3339)}
		}
		row := metav1.TableRow{Cells: cells}
		switch include {
		case metav1.IncludeObject:
			row.Object = runtime.RawExtension{Raw: e.Data}
		case metav1.IncludeMetadata:
			pm := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}}
			objMeta(m, &pm.ObjectMeta)
			row.Object = runtime.RawExtension{Object: pm}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// objMeta copies the metadata behind an accessor.
func objMeta(m metav1.Object, out *metav1.ObjectMeta) {
	*out = metav1.ObjectMeta{
		Name: m.GetName(), GenerateName: m.GetGenerateName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
		ResourceVersion: m.GetResourceVersion(), Generation: m.GetGeneration(), CreationTimestamp: m.GetCreationTimestamp(),
		DeletionTimestamp: m.GetDeletionTimestamp(), DeletionGracePeriodSeconds: m.GetDeletionGracePeriodSeconds(),
		Labels: m.GetLabels(), Annotations: m.GetAnnotations(), OwnerReferences: m.GetOwnerReferences(),
		Finalizers: m.GetFinalizers(), ManagedFields: m.GetManagedFields(),
	}
}
