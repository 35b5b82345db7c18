package apiserver

import (
	"crypto/rand"
	"reflect"
	"time"

	"github.com/google/uuid"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

// This file holds the object-meta conventions every resource shares: names,
// uids, timestamps, generation, and the spec/status split.

// nameSuffixChars are the characters of generated name suffixes (no vowels,
// so no words, and no easily confused characters), as upstream uses.
const nameSuffixChars = "bcdfghjklmnpqrstvwxz2456789"

func generateName(base string) string {
	const n = 5
	if len(base) > 63-n {
		base = base[:63-n]
	}
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = nameSuffixChars[int(b[i])%len(nameSuffixChars)]
	}
	return base + string(b)
}

// prepareCreateMeta sets what the server owns on a new object.
func prepareCreateMeta(res *registry.Resource, obj runtime.Object, m metav1.Object) {
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(generateName(m.GetGenerateName()))
	}
	m.SetUID(types.UID(uuid.NewString()))
	m.SetCreationTimestamp(metav1.NewTime(time.Now().Truncate(time.Second)))
	m.SetResourceVersion("")
	m.SetSelfLink("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetGeneration(0)
	if hasSpec(obj) {
		m.SetGeneration(1)
	}
	if res.Status {
		setStatus(obj, reflect.Value{})
	}
}

// keepServerMeta carries over on update the metadata clients may not change.
func keepServerMeta(m, old metav1.Object) {
	m.SetUID(old.GetUID())
	m.SetCreationTimestamp(old.GetCreationTimestamp())
	m.SetGeneration(old.GetGeneration())
	m.SetDeletionTimestamp(old.GetDeletionTimestamp())
	m.SetDeletionGracePeriodSeconds(old.GetDeletionGracePeriodSeconds())
	m.SetSelfLink("")
	if m.GetGenerateName() == "" {
		m.SetGenerateName(old.GetGenerateName())
	}
}

// validateMeta checks object metadata on create (old nil) or update.
func validateMeta(res *registry.Resource, m, old metav1.Object) field.ErrorList {
	nameFn := apivalidation.NameIsDNSSubdomain
	switch {
	case res.NameIsDNSLabel:
		nameFn = apivalidation.NameIsDNSLabel
	case res.NameIsPathSegment:
		nameFn = func(name string, prefix bool) []string { return path.IsValidPathSegmentName(name) }
	}
	fld := field.NewPath("metadata")
	errs := apivalidation.ValidateObjectMetaAccessor(m, res.Namespaced, nameFn, fld)
	if old != nil {
		errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(m, old, fld)...)
	}
	return errs
}

func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

func hasSpec(obj runtime.Object) bool { return structField(obj, "Spec").IsValid() }

// specChanged reports whether anything but metadata and status differs, which
// is what bumps metadata.generation.
func specChanged(obj, old runtime.Object) bool {
	a, b := reflect.ValueOf(obj).Elem(), reflect.ValueOf(old).Elem()
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		switch t.Field(i).Name {
		case "TypeMeta", "ObjectMeta", "Status":
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			return true
		}
	}
	return false
}

// setStatus sets obj's status to v (the zero value when v is invalid).
func setStatus(obj runtime.Object, v reflect.Value) {
	f := structField(obj, "Status")
	if !f.IsValid() {
		return
	}
	if !v.IsValid() {
		f.Set(reflect.Zero(f.Type()))
		return
	}
	f.Set(v)
}

func statusOf(obj runtime.Object) reflect.Value { return structField(obj, "Status") }
