package apiserver_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

// pods/log refuses what it cannot serve with upstream's messages, before
// any kubelet is asked.
func TestPodLogsErrors(t *testing.T) {
	srv := apiservertest.Start(t)
	ctx := context.Background()
	pods := srv.Client.CoreV1().Pods("default")
	two := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "two"}, Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}}
	withInit := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "init"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "setup", Image: "busybox"}},
		Containers:     []corev1.Container{{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}}
	one := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "one"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}
	for _, p := range []*corev1.Pod{two, withInit, one} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		pod       string
		container string
		want      string
		notFound  bool
	}{
		{"two", "", "a container name must be specified for pod two, choose one of: [a b]", false},
		{"init", "", "a container name must be specified for pod init, choose one of: [a b] or one of the init containers: [setup]", false},
		{"two", "c", "container c is not valid for pod two", false},
		{"one", "", "pod one does not have a host assigned", false},
		{"missing", "", `pods "missing" not found`, true},
	} {
		// Stream, as kubectl logs reads.
		body, err := pods.GetLogs(c.pod, &corev1.PodLogOptions{Container: c.container}).Stream(ctx)
		if err == nil {
			body.Close()
		}
		if c.notFound && !apierrors.IsNotFound(err) || !c.notFound && !apierrors.IsBadRequest(err) {
			t.Errorf("%s/%q: got %v, want %s", c.pod, c.container, err, map[bool]string{true: "NotFound", false: "BadRequest"}[c.notFound])
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%s/%q: message %q, want %q", c.pod, c.container, err.Error(), c.want)
		}
	}
	// Listed in discovery, as upstream's.
	list, err := srv.Client.Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range list.APIResources {
		if r.Name == "pods/log" && len(r.Verbs) == 1 && r.Verbs[0] == "get" {
			found = true
		}
	}
	if !found {
		t.Error("pods/log (get) not in discovery")
	}
}
