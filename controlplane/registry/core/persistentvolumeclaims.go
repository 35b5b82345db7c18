package core

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

// betaStorageClassAnnotation is the storage class of claims written before
// spec.storageClassName existed; upstream still honours it first.
const betaStorageClassAnnotation = "volume.beta.kubernetes.io/storage-class"

// pvcAccessModes are the access modes upstream accepts, in the sorted order
// its "supported values" message lists them.
var pvcAccessModes = []string{
	string(corev1.ReadOnlyMany), string(corev1.ReadWriteMany), string(corev1.ReadWriteOnce), string(corev1.ReadWriteOncePod),
}

func persistentvolumeclaims() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "persistentvolumeclaims", Singular: "persistentvolumeclaim", Kind: "PersistentVolumeClaim",
		Namespaced: true, ShortNames: []string{"pvc"}, Status: true,
		New:     func() runtime.Object { return &corev1.PersistentVolumeClaim{} },
		NewList: func() runtime.Object { return &corev1.PersistentVolumeClaimList{} },
		Default: func(obj runtime.Object) {
			DefaultPersistentVolumeClaimSpec(&obj.(*corev1.PersistentVolumeClaim).Spec)
		},
		// A new claim waits for a volume: upstream stores an empty status and
		// defaults the phase to Pending whenever it is read.
		PrepareForCreate: func(obj runtime.Object) {
			obj.(*corev1.PersistentVolumeClaim).Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			pvc := obj.(*corev1.PersistentVolumeClaim)
			errs := ValidatePersistentVolumeClaimSpec(&pvc.Spec, field.NewPath("spec"))
			if o, ok := old.(*corev1.PersistentVolumeClaim); ok {
				errs = append(errs, pvcValidateUpdate(pvc, o)...)
			}
			return errs
		},
		ValidateStatus: func(obj, old runtime.Object) field.ErrorList {
			pvc := obj.(*corev1.PersistentVolumeClaim)
			var errs field.ErrorList
			for i, m := range pvc.Status.AccessModes {
				if !pvcAccessModeKnown(m) {
					errs = append(errs, field.NotSupported(field.NewPath("status", "accessModes").Index(i), m, pvcAccessModes))
				}
			}
			for name, q := range pvc.Status.Capacity {
				if q.Sign() < 0 {
					errs = append(errs, field.Invalid(field.NewPath("status", "capacity").Key(string(name)), q.String(), "must be greater than or equal to 0"))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Status", Type: "string", Description: "phase represents the current phase of PersistentVolumeClaim."},
			{Name: "Volume", Type: "string", Description: "volumeName is the binding reference to the PersistentVolume backing this claim."},
			{Name: "Capacity", Type: "string", Description: "capacity represents the actual resources of the underlying volume."},
			{Name: "Access Modes", Type: "string", Description: "accessModes contains the actual access modes the volume backing the PVC has."},
			{Name: "StorageClass", Type: "string", Description: "StorageClass of the pvc"},
			{Name: "VolumeAttributesClass", Type: "string", Description: "VolumeAttributesClass of the pvc"},
			registry.AgeColumn,
			{Name: "VolumeMode", Type: "string", Priority: 1, Description: "volumeMode defines what type of volume is required by the claim."},
		},
		Row: func(obj runtime.Object) []interface{} {
			pvc := obj.(*corev1.PersistentVolumeClaim)
			phase := string(pvc.Status.Phase)
			if pvc.DeletionTimestamp != nil {
				phase = "Terminating"
			}
			// The capacity is the bound volume's; an unbound claim has none yet.
			capacity := ""
			if pvc.Spec.VolumeName != "" {
				if q, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok {
					capacity = q.String()
				} else {
					capacity = "0"
				}
			}
			class := pvc.Annotations[betaStorageClassAnnotation]
			if class == "" && pvc.Spec.StorageClassName != nil {
				class = *pvc.Spec.StorageClassName
			}
			vac := "<unset>"
			if pvc.Spec.VolumeAttributesClassName != nil && *pvc.Spec.VolumeAttributesClassName != "" {
				vac = *pvc.Spec.VolumeAttributesClassName
			}
			mode := "<unset>"
			if pvc.Spec.VolumeMode != nil {
				mode = string(*pvc.Spec.VolumeMode)
			}
			return []interface{}{pvc.Name, phase, pvc.Spec.VolumeName, capacity, AccessModesString(pvc.Status.AccessModes), class, vac,
				registry.Age(pvc.CreationTimestamp), mode}
		},
	}
}

// DefaultPersistentVolumeClaimSpec fills in what upstream defaults in a
// claim's spec (also a StatefulSet's volumeClaimTemplates): a filesystem volume.
func DefaultPersistentVolumeClaimSpec(spec *corev1.PersistentVolumeClaimSpec) {
	if spec.VolumeMode == nil {
		m := corev1.PersistentVolumeFilesystem
		spec.VolumeMode = &m
	}
}

// AccessModesString renders access modes as kubectl does: abbreviations in a
// fixed order, each once ("RWO,ROX").
func AccessModesString(modes []corev1.PersistentVolumeAccessMode) string {
	var out []string
	for _, m := range []struct {
		mode  corev1.PersistentVolumeAccessMode
		short string
	}{{corev1.ReadWriteOnce, "RWO"}, {corev1.ReadOnlyMany, "ROX"}, {corev1.ReadWriteMany, "RWX"}, {corev1.ReadWriteOncePod, "RWOP"}} {
		for _, have := range modes {
			if have == m.mode {
				out = append(out, m.short)
				break
			}
		}
	}
	return strings.Join(out, ",")
}

func pvcAccessModeKnown(m corev1.PersistentVolumeAccessMode) bool {
	for _, known := range pvcAccessModes {
		if string(m) == known {
			return true
		}
	}
	return false
}

// ValidatePersistentVolumeClaimSpec checks a claim's spec (also a
// StatefulSet's volumeClaimTemplates) with upstream's paths and messages:
// at least one known access mode, a positive storage request.
func ValidatePersistentVolumeClaimSpec(spec *corev1.PersistentVolumeClaimSpec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(spec.AccessModes) == 0 {
		errs = append(errs, field.Required(fldPath.Child("accessModes"), "at least 1 access mode is required"))
	}
	rwop := false
	for _, m := range spec.AccessModes {
		if !pvcAccessModeKnown(m) {
			errs = append(errs, field.NotSupported(fldPath.Child("accessModes"), m, pvcAccessModes))
		}
		rwop = rwop || m == corev1.ReadWriteOncePod
	}
	if rwop && len(spec.AccessModes) > 1 {
		errs = append(errs, field.Forbidden(fldPath.Child("accessModes"), "may not use ReadWriteOncePod with other access modes"))
	}
	if spec.Selector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(spec.Selector, metav1validation.LabelSelectorValidationOptions{}, fldPath.Child("selector"))...)
	}
	// Upstream names the request spec.resources[storage], not
	// spec.resources.requests[storage]; kept for identical messages.
	storagePath := fldPath.Child("resources").Key(string(corev1.ResourceStorage))
	if q, ok := spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		errs = append(errs, field.Required(storagePath, ""))
	} else if q.Sign() <= 0 {
		errs = append(errs, field.Invalid(storagePath, q.String(), "must be greater than zero"))
	}
	if spec.VolumeMode != nil && *spec.VolumeMode != corev1.PersistentVolumeFilesystem && *spec.VolumeMode != corev1.PersistentVolumeBlock {
		errs = append(errs, field.NotSupported(fldPath.Child("volumeMode"), *spec.VolumeMode, []string{string(corev1.PersistentVolumeBlock), string(corev1.PersistentVolumeFilesystem)}))
	}
	if spec.StorageClassName != nil && *spec.StorageClassName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(*spec.StorageClassName) {
			errs = append(errs, field.Invalid(fldPath.Child("storageClassName"), *spec.StorageClassName, msg))
		}
	}
	return errs
}

// pvcValidateUpdate keeps a claim's spec fixed after creation, as upstream
// does (quota and limits would otherwise be gamed): the volume name may be
// set once, and a bound claim may ask for more storage, never less.
func pvcValidateUpdate(pvc, old *corev1.PersistentVolumeClaim) field.ErrorList {
	var errs field.ErrorList
	a, b := old.Spec.DeepCopy(), pvc.Spec.DeepCopy()
	if a.VolumeName == "" {
		a.VolumeName = b.VolumeName
	}
	if old.Status.Phase == corev1.ClaimBound {
		if a.Resources.Requests != nil && b.Resources.Requests != nil {
			b.Resources.Requests[corev1.ResourceStorage] = a.Resources.Requests[corev1.ResourceStorage]
		}
		a.VolumeAttributesClassName = b.VolumeAttributesClassName
	}
	if !apiequality.Semantic.DeepEqual(a, b) {
		errs = append(errs, field.Forbidden(field.NewPath("spec"), "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"))
	}
	oldSize, newSize := old.Spec.Resources.Requests[corev1.ResourceStorage], pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if newSize.Cmp(oldSize) < 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "resources", "requests", "storage"), "field can not be less than previous value"))
	}
	return errs
}
