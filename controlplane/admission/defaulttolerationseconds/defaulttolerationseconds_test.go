package defaulttolerationseconds_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/admission/defaulttolerationseconds"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/registry"
)

var pods = &registry.Resource{Version: "v1", Plural: "pods", Kind: "Pod"}

func admit(t *testing.T, a *defaulttolerationseconds.Admitter, tols ...corev1.Toleration) []corev1.Toleration {
	t.Helper()
	p := &corev1.Pod{Spec: corev1.PodSpec{Tolerations: tols}}
	if err := a.AdmitCreate(context.Background(), nil, pods, p); err != nil {
		t.Fatal(err)
	}
	return p.Spec.Tolerations
}

func find(tols []corev1.Toleration, key string) []corev1.Toleration {
	var out []corev1.Toleration
	for _, t := range tols {
		if t.Key == key {
			out = append(out, t)
		}
	}
	return out
}

func TestAddsBoth(t *testing.T) {
	got := admit(t, defaulttolerationseconds.New(300, 120))
	if len(got) != 2 {
		t.Fatalf("tolerations %+v", got)
	}
	for key, secs := range map[string]int64{corev1.TaintNodeNotReady: 300, corev1.TaintNodeUnreachable: 120} {
		f := find(got, key)
		if len(f) != 1 || f[0].Operator != corev1.TolerationOpExists || f[0].Effect != corev1.TaintEffectNoExecute ||
			f[0].TolerationSeconds == nil || *f[0].TolerationSeconds != secs {
			t.Errorf("%s: %+v", key, f)
		}
	}
}

func TestKeepsThePodsOwn(t *testing.T) {
	own := corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](2)}
	other := corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	got := admit(t, defaulttolerationseconds.New(300, 300), other, own)
	if len(got) != 3 || got[0] != other || got[1] != own {
		t.Fatalf("tolerations %+v", got)
	}
	if f := find(got, corev1.TaintNodeUnreachable); len(f) != 1 || *f[0].TolerationSeconds != 2 {
		t.Errorf("unreachable: %+v", f)
	}
	if f := find(got, corev1.TaintNodeNotReady); len(f) != 1 || *f[0].TolerationSeconds != 300 {
		t.Errorf("not-ready: %+v", f)
	}
	// A toleration of every taint covers both; so does one with no effect.
	if got := admit(t, defaulttolerationseconds.New(300, 300), corev1.Toleration{Operator: corev1.TolerationOpExists}); len(got) != 1 {
		t.Errorf("wildcard: %+v", got)
	}
	noEffect := corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists}
	if got := admit(t, defaulttolerationseconds.New(300, 300), noEffect); len(got) != 2 || len(find(got, corev1.TaintNodeNotReady)) != 1 {
		t.Errorf("not-ready with no effect: %+v", got)
	}
	// A NoSchedule toleration of the key does not count.
	ns := corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	if got := admit(t, defaulttolerationseconds.New(300, 300), ns); len(got) != 3 {
		t.Errorf("NoSchedule only: %+v", got)
	}
}

func TestOtherResourcesUntouched(t *testing.T) {
	svc := &corev1.Service{}
	if err := defaulttolerationseconds.New(300, 300).AdmitCreate(context.Background(), nil, &registry.Resource{Version: "v1", Plural: "services"}, svc); err != nil {
		t.Fatal(err)
	}
}

// TestThroughTheServer: a pod created through the API comes back with the
// tolerations, validated and stored.
func TestThroughTheServer(t *testing.T) {
	s := apiservertest.Start(t, defaulttolerationseconds.New(300, 300))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	created, err := s.Client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(find(created.Spec.Tolerations, corev1.TaintNodeNotReady)) != 1 || len(find(created.Spec.Tolerations, corev1.TaintNodeUnreachable)) != 1 {
		t.Fatalf("tolerations %+v", created.Spec.Tolerations)
	}
}
