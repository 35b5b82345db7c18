package core

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPersistentVolumeClaimValidation(t *testing.T) {
	r := persistentvolumeclaims()
	bad := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: corev1.PersistentVolumeClaimSpec{
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{}}}}
	r.Default(bad)
	if bad.Spec.VolumeMode == nil || *bad.Spec.VolumeMode != corev1.PersistentVolumeFilesystem {
		t.Errorf("volumeMode not defaulted to Filesystem: %v", bad.Spec.VolumeMode)
	}
	got := map[string]string{}
	for _, e := range r.Validate(bad, nil) {
		got[e.Field] = e.Error()
	}
	for path, want := range map[string]string{
		"spec.accessModes":        "spec.accessModes: Required value: at least 1 access mode is required",
		"spec.resources[storage]": "spec.resources[storage]: Required value",
	} {
		if got[path] != want {
			t.Errorf("%s: got %q, want %q", path, got[path], want)
		}
	}

	bad.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{"ReadSometimes"}
	bad.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("0")
	got = map[string]string{}
	for _, e := range r.Validate(bad, nil) {
		got[e.Field] = e.Error()
	}
	for path, want := range map[string]string{
		"spec.accessModes":        `spec.accessModes: Unsupported value: "ReadSometimes": supported values: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"`,
		"spec.resources[storage]": `spec.resources[storage]: Invalid value: "0": must be greater than zero`,
	} {
		if got[path] != want {
			t.Errorf("%s: got %q, want %q", path, got[path], want)
		}
	}

	good := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	r.Default(good)
	if errs := r.Validate(good, nil); len(errs) != 0 {
		t.Fatalf("valid claim refused: %v", errs)
	}
	changed := good.DeepCopy()
	changed.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	if errs := r.Validate(changed, good); len(errs) != 1 || errs[0].Field != "spec" {
		t.Errorf("changing the spec of a claim: %v", errs)
	}
	bound := good.DeepCopy()
	bound.Spec.VolumeName = "pv-1"
	if errs := r.Validate(bound, good); len(errs) != 0 {
		t.Errorf("setting the volume name once: %v", errs)
	}
}

func TestPersistentVolumeClaimTable(t *testing.T) {
	r := persistentvolumeclaims()
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-web-0"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}}
	r.Default(pvc)
	r.PrepareForCreate(pvc)
	row := r.Row(pvc)
	if len(row) != len(r.Columns) {
		t.Fatalf("%d cells for %d columns", len(row), len(r.Columns))
	}
	if row[1] != "Pending" || row[2] != "" || row[3] != "" || row[8] != "Filesystem" {
		t.Errorf("pending claim row: %v", row)
	}
	pvc.Spec.VolumeName = "pv-1"
	pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound,
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadWriteOnce},
		Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}
	row = r.Row(pvc)
	if row[1] != "Bound" || row[2] != "pv-1" || row[3] != "1Gi" || row[4] != "RWO,RWX" {
		t.Errorf("bound claim row: %v", row)
	}
}
