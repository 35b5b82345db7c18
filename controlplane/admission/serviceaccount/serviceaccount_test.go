package serviceaccount_test

import (
	"context"
	"regexp"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/admission/serviceaccount"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

func ptr[T any](v T) *T { return &v }

func tokenVolumes(pod *corev1.Pod) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range pod.Spec.Volumes {
		if regexp.MustCompile(`^kube-api-access-[a-z0-9]{5}$`).MatchString(v.Name) {
			out = append(out, v)
		}
	}
	return out
}

func TestServiceAccountAdmission(t *testing.T) {
	s := apiservertest.Start(t, serviceaccount.New())
	ctx := context.Background()
	pods := s.Client.CoreV1().Pods("default")
	create := func(p *corev1.Pod) *corev1.Pod {
		t.Helper()
		out, err := pods.Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		return out
	}
	mk := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}}
	}

	// No "default" account exists yet: the pod is admitted all the same,
	// with the account named and the volume mounted everywhere.
	p := create(mk("plain"))
	if p.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName %q", p.Spec.ServiceAccountName)
	}
	vols := tokenVolumes(p)
	if len(vols) != 1 || len(p.Spec.Volumes) != 1 {
		t.Fatalf("volumes %+v", p.Spec.Volumes)
	}
	if !equality.Semantic.DeepEqual(vols[0].Projected, serviceaccount.TokenVolumeSource()) {
		t.Errorf("volume %+v", vols[0].Projected)
	}
	src := vols[0].Projected
	if *src.DefaultMode != 420 || src.Sources[0].ServiceAccountToken.Path != "token" || *src.Sources[0].ServiceAccountToken.ExpirationSeconds != 3607 ||
		src.Sources[1].ConfigMap.Name != "kube-root-ca.crt" || src.Sources[1].ConfigMap.Items[0] != (corev1.KeyToPath{Key: "ca.crt", Path: "ca.crt"}) ||
		src.Sources[2].DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.namespace" || src.Sources[2].DownwardAPI.Items[0].Path != "namespace" {
		t.Errorf("volume shape %+v", src)
	}
	want := corev1.VolumeMount{Name: vols[0].Name, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0] != want {
			t.Errorf("container %s mounts %+v", c.Name, c.VolumeMounts)
		}
	}

	// Turned off on the pod, or on its account unless the pod turns it on.
	off := mk("off")
	off.Spec.AutomountServiceAccountToken = ptr(false)
	if p := create(off); len(p.Spec.Volumes) != 0 || len(p.Spec.Containers[0].VolumeMounts) != 0 {
		t.Errorf("automount false on the pod: %+v", p.Spec.Volumes)
	}
	if _, err := s.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "quiet"},
		AutomountServiceAccountToken: ptr(false), ImagePullSecrets: []corev1.LocalObjectReference{{Name: "registry"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	quiet := mk("quiet")
	quiet.Spec.ServiceAccountName = "quiet"
	p = create(quiet)
	if len(p.Spec.Volumes) != 0 {
		t.Errorf("automount false on the account: %+v", p.Spec.Volumes)
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "registry" {
		t.Errorf("imagePullSecrets %+v, want the account's", p.Spec.ImagePullSecrets)
	}
	loud := mk("loud")
	loud.Spec.ServiceAccountName = "quiet"
	loud.Spec.AutomountServiceAccountToken = ptr(true)
	loud.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own"}}
	p = create(loud)
	if len(tokenVolumes(p)) != 1 {
		t.Errorf("automount true on the pod over the account's false: %+v", p.Spec.Volumes)
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "own" {
		t.Errorf("imagePullSecrets %+v, want the pod's own", p.Spec.ImagePullSecrets)
	}

	// A container with something at the mount path keeps it.
	own := mk("own")
	own.Spec.Volumes = []corev1.Volume{{Name: "mine", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	own.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}
	p = create(own)
	if len(p.Spec.Volumes) != 2 || len(tokenVolumes(p)) != 1 {
		t.Fatalf("volumes %+v", p.Spec.Volumes)
	}
	if m := p.Spec.Containers[1].VolumeMounts; len(m) != 1 || m[0].Name != "mine" {
		t.Errorf("container b mounts %+v, want only its own", m)
	}
	if m := p.Spec.Containers[0].VolumeMounts; len(m) != 1 || m[0].Name != tokenVolumes(p)[0].Name {
		t.Errorf("container a mounts %+v", m)
	}
	// Every container has its own: no volume.
	all := mk("all")
	all.Spec.Volumes = own.Spec.Volumes
	for _, c := range []*corev1.Container{&all.Spec.InitContainers[0], &all.Spec.Containers[0], &all.Spec.Containers[1]} {
		c.VolumeMounts = own.Spec.Containers[1].VolumeMounts
	}
	if p := create(all); len(p.Spec.Volumes) != 1 {
		t.Errorf("volumes %+v, want only the pod's own", p.Spec.Volumes)
	}
}
