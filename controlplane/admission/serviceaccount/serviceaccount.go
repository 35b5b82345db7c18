// Package serviceaccount is the ServiceAccount admission step: it gives a
// pod being created the "default" service account when it names none,
// copies the account's imagePullSecrets when the pod has none, and, unless
// the pod or its account turns automountServiceAccountToken off, adds
// upstream's kube-api-access-XXXXX projected volume (a bound token, the
// cluster CA from kube-root-ca.crt, the namespace) mounted read-only at
// /var/run/secrets/kubernetes.io/serviceaccount in every container.
//
// Unlike upstream, a pod whose service account does not exist (yet) is not
// refused: namespaces get their "default" account asynchronously, from the
// serviceaccount controller, and clients create pods right after creating
// a namespace. Such a pod gets the volume; the kubelet's token request then
// waits for the account.
package serviceaccount

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry"
)

const (
	// DefaultServiceAccount is the account of pods that name none.
	DefaultServiceAccount = "default"
	// MountPath is where the token volume is mounted.
	MountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// VolumePrefix starts the token volume's name; five random characters
	// follow.
	VolumePrefix = "kube-api-access-"
	// TokenExpirationSeconds is what the volume asks for: upstream's
	// 3607, which the API server answers with a token signed for longer
	// (see apiserver's TokenRequest) while the kubelet refreshes it hourly.
	TokenExpirationSeconds = 3607
	mirrorPodAnnotation    = "kubernetes.io/config.mirror"
)

// Admission is the ServiceAccount admission step.
type Admission struct{}

// New returns the ServiceAccount admission step.
func New() *Admission { return &Admission{} }

// Name is upstream's plugin name.
func (*Admission) Name() string { return "ServiceAccount" }

// AdmitCreate fills in a new pod's service account and token volume; other
// objects pass untouched.
func (a *Admission) AdmitCreate(ctx context.Context, r apiserver.Reader, res *registry.Resource, obj runtime.Object) error {
	pod, ok := obj.(*corev1.Pod)
	if !ok || res.Group != "" || res.Plural != "pods" {
		return nil
	}
	// Mirror pods (static pods of a kubelet) may not reference API
	// objects; they are left as the kubelet wrote them.
	if _, mirror := pod.Annotations[mirrorPodAnnotation]; mirror {
		return nil
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = DefaultServiceAccount
	}
	var sa *corev1.ServiceAccount
	obj, err := r.Get(ctx, "", "v1", "serviceaccounts", pod.Namespace, pod.Spec.ServiceAccountName)
	switch {
	case err == nil:
		sa = obj.(*corev1.ServiceAccount)
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("pod %s/%s: service account %s: %w", pod.Namespace, pod.Name, pod.Spec.ServiceAccountName, err)
	}
	if automount(pod, sa) {
		mountToken(pod)
	}
	if sa != nil && len(pod.Spec.ImagePullSecrets) == 0 {
		for _, s := range sa.ImagePullSecrets {
			pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s.Name})
		}
	}
	return nil
}

// automount is upstream's rule: the pod's setting, else the account's,
// else true.
func automount(pod *corev1.Pod, sa *corev1.ServiceAccount) bool {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken
	}
	if sa != nil && sa.AutomountServiceAccountToken != nil {
		return *sa.AutomountServiceAccountToken
	}
	return true
}

// mountToken mounts the token volume in every container and init container
// that has nothing at MountPath already, adding the volume if one needs it
// and the pod has no kube-api-access volume of its own.
func mountToken(pod *corev1.Pod) {
	name := ""
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, VolumePrefix) {
			name = v.Name
			break
		}
	}
	existing := name != ""
	if !existing {
		name = VolumePrefix + utilrand.String(5)
	}
	needed := false
	mount := func(c *corev1.Container) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == MountPath {
				return
			}
		}
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: MountPath})
		needed = true
	}
	for i := range pod.Spec.InitContainers {
		mount(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		mount(&pod.Spec.Containers[i])
	}
	if needed && !existing {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: TokenVolumeSource()}})
	}
}

// TokenVolumeSource is upstream's projected volume of the service account
// token, the cluster CA and the namespace.
func TokenVolumeSource() *corev1.ProjectedVolumeSource {
	mode := corev1.ProjectedVolumeSourceDefaultMode
	exp := int64(TokenExpirationSeconds)
	return &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}
}
