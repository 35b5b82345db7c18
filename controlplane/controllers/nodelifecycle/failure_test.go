package nodelifecycle_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/admission/defaulttolerationseconds"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/nodelifecycle"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/controllers/tainteviction"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func podReady(p *corev1.Pod) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return ""
}

// TestNodeFailure stops one of two sets of hollow nodes: its node goes
// Unknown with the unreachable taints, its pods are marked not ready, then
// evicted once the default unreachable toleration (1 s here) runs out, and
// the ReplicaSet's replacements run on the remaining nodes.
func TestNodeFailure(t *testing.T) {
	s := apiservertest.Start(t, defaulttolerationseconds.New(300, 1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simCfg := func(prefix string, n int) sim.Config {
		cfg := sim.DefaultConfig(n)
		cfg.Prefix, cfg.LeaseDuration = prefix, time.Second // renewed every 250 ms
		return cfg
	}
	go sim.New(s.Client, simCfg("a-", 2)).Run(ctx)
	ctxB, stopB := context.WithCancel(ctx)
	go sim.New(s.Client, simCfg("b-", 1)).Run(ctxB)
	go scheduler.New(s.Client).Run(ctx)
	factory := informers.NewSharedInformerFactory(s.Client, 0)
	go replicaset.New(s.Client, factory).Run(ctx)
	go nodelifecycle.New(s.Client, factory, nodelifecycle.Config{GracePeriod: 3 * time.Second, MonitorPeriod: 100 * time.Millisecond}).Run(ctx)
	go tainteviction.New(s.Client, factory, nil).Run(ctx)

	nodeState := func(name string) (corev1.ConditionStatus, []corev1.Taint, error) {
		n, err := s.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", nil, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status, n.Spec.Taints, nil
			}
		}
		return "", n.Spec.Taints, nil
	}
	apiservertest.Eventually(t, 30*time.Second, "nodes ready", func() error {
		for _, name := range []string{"a-0", "a-1", "b-0"} {
			if st, taints, err := nodeState(name); err != nil || st != corev1.ConditionTrue || len(taints) != 0 {
				return fmt.Errorf("node %s: %s %v %v", name, st, taints, err)
			}
		}
		return nil
	})

	labels := map[string]string{"app": "web"}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.ReplicaSetSpec{
		Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "web:1"}}}}}}
	if _, err := s.Client.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := s.Client.CoreV1().Pods("default")
	// running lists the live pods Running and ready, by node.
	running := func() (map[string][]string, error) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return nil, err
		}
		out := map[string][]string{}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) == corev1.ConditionTrue {
				out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p.Name)
			}
		}
		return out, nil
	}
	var onB []string
	apiservertest.Eventually(t, 30*time.Second, "3 pods running", func() error {
		by, err := running()
		if err != nil {
			return err
		}
		if n := len(by["a-0"]) + len(by["a-1"]) + len(by["b-0"]); n != 3 {
			return fmt.Errorf("running: %v", by)
		}
		onB = by["b-0"]
		return nil
	})
	if len(onB) == 0 {
		t.Fatal("no pod was placed on b-0, so its failure tests nothing")
	}
	created, err := pods.Get(ctx, onB[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(created.Spec.Tolerations), corev1.TaintNodeUnreachable) {
		t.Fatalf("pod without the default tolerations: %+v", created.Spec.Tolerations)
	}

	stopB()
	apiservertest.Eventually(t, 30*time.Second, "b-0 unreachable", func() error {
		st, taints, err := nodeState("b-0")
		if err != nil {
			return err
		}
		want := map[string]bool{"node.kubernetes.io/unreachable:NoExecute": false, "node.kubernetes.io/unreachable:NoSchedule": false}
		for _, tt := range taints {
			want[tt.Key+":"+string(tt.Effect)] = true
		}
		if st != corev1.ConditionUnknown || !want["node.kubernetes.io/unreachable:NoExecute"] || !want["node.kubernetes.io/unreachable:NoSchedule"] {
			return fmt.Errorf("b-0: Ready=%s taints %v", st, taints)
		}
		return nil
	})
	for _, name := range []string{"a-0", "a-1"} {
		if st, taints, err := nodeState(name); err != nil || st != corev1.ConditionTrue || len(taints) != 0 {
			t.Errorf("live node %s: Ready=%s taints %v err %v", name, st, taints, err)
		}
	}

	apiservertest.Eventually(t, 30*time.Second, "pods evicted and replaced", func() error {
		for _, name := range onB {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err // nobody finishes a deletion on a dead node, so it must still be there
			}
			if p.DeletionTimestamp == nil || podReady(p) != corev1.ConditionFalse {
				return fmt.Errorf("pod %s on b-0: deletion %v ready %s", name, p.DeletionTimestamp, podReady(p))
			}
		}
		by, err := running()
		if err != nil {
			return err
		}
		if len(by["a-0"])+len(by["a-1"]) != 3 || len(by["b-0"]) != 0 {
			return fmt.Errorf("running: %v", by)
		}
		return nil
	})
	evs, err := s.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		if e.Reason == "TaintManagerEviction" && e.InvolvedObject.Name == onB[0] {
			found = true
		}
	}
	if !found {
		t.Errorf("no TaintManagerEviction event for %s", onB[0])
	}
}
