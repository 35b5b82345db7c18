// Package registry describes the API resources the server serves: their Go types,
// defaulting, validation, table columns and selectable fields. The HTTP layer sees
// only Resource values, so serving a new type means adding a Resource, never a route.
//
// Each API group has its own package beside this one (core, apps, batch, ...) that
// returns its Resources; this package holds the contract and the generic pieces
// every resource shares (object-meta validation, default tables).
package registry

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Resource is everything the server needs to know to serve one resource of one
// group-version. Function fields may be nil, meaning "nothing to do".
type Resource struct {
	Group    string // "" for the core group
	Version  string // "v1"
	Plural   string // "pods": the URL segment
	Singular string // "pod"
	Kind     string // "Pod"

	Namespaced bool
	ShortNames []string // "po"
	Categories []string // "all"

	// New returns an empty object of the type (e.g. &corev1.Pod{}).
	New func() runtime.Object
	// NewList returns an empty list of the type (e.g. &corev1.PodList{}).
	NewList func() runtime.Object

	// Subresources this resource serves besides the object itself.
	Status bool   // has a status subresource: status is ignored on writes to the object, spec on writes to status
	Scale  *Scale // has a scale subresource

	// StorageResource names the etcd key space when it differs from Plural.
	StorageResource string
	// StoredAs is set on a resource that is another version of a resource
	// stored elsewhere (autoscaling/v1 HPAs are stored as autoscaling/v2,
	// events.k8s.io/v1 events as core/v1 events): objects are converted on
	// every read and write, so both versions see the same objects.
	StoredAs *StoredAs

	// Default fills in the upstream defaults for the object, in place.
	Default func(obj runtime.Object)
	// PrepareForCreate resets what a client may not set on create (status, phase)
	// after Default and generic preparation (uid, creationTimestamp, cleared
	// status), and before validation.
	PrepareForCreate func(obj runtime.Object)
	// PrepareForUpdate adjusts a new object from the old one on update of the
	// main resource (e.g. carrying over fields that only the system sets).
	PrepareForUpdate func(obj, old runtime.Object)
	// Validate checks an object being created (old == nil) or updated. Generic
	// object-meta validation has already run; return only type-specific errors,
	// with field paths like spec.containers[0].image.
	Validate func(obj, old runtime.Object) field.ErrorList
	// ValidateStatus checks an update through the status subresource.
	ValidateStatus func(obj, old runtime.Object) field.ErrorList

	// NameIsDNSLabel makes names follow RFC 1123 labels (namespaces, services)
	// instead of the default RFC 1123 subdomain.
	NameIsDNSLabel bool
	// NameIsPathSegment allows any name that is a valid path segment (rbac
	// roles, whose names contain ':').
	NameIsPathSegment bool

	// Columns are the table columns served for `kubectl get` (the first must be
	// Name); columns with Priority 1 show only with -o wide. Nil means the
	// default Name / Created At table.
	Columns []metav1.TableColumnDefinition
	// Row returns one cell per column for obj.
	Row func(obj runtime.Object) []interface{}

	// Fields returns the selectable fields of obj besides metadata.name and
	// metadata.namespace, which are always selectable (e.g. spec.nodeName).
	Fields func(obj runtime.Object) fields.Set
}

// Scale describes where a resource keeps what the scale subresource shows.
type Scale struct {
	// Replicas reads spec.replicas, status.replicas and the label selector
	// (as a string) from the object.
	Get func(obj runtime.Object) (specReplicas, statusReplicas int32, selector string)
	// SetReplicas writes spec.replicas.
	SetReplicas func(obj runtime.Object, replicas int32)
}

// GroupVersion returns the resource's group-version.
func (r *Resource) GroupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: r.Group, Version: r.Version}
}

// GVR returns the resource's group-version-resource.
func (r *Resource) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Plural}
}

// GVK returns the kind served by the resource.
func (r *Resource) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind}
}

// StorageName is the resource name used in storage keys.
func (r *Resource) StorageName() string {
	if r.StorageResource != "" {
		return r.StorageResource
	}
	return r.Plural
}

// StoredAs names the resource whose type is stored, and converts to and from it.
type StoredAs struct {
	Group, Version, Plural string
	// ToStorage converts an object of this resource to the stored type.
	ToStorage func(obj runtime.Object) (runtime.Object, error)
	// FromStorage converts a stored object to this resource's type.
	FromStorage func(obj runtime.Object) (runtime.Object, error)
}
