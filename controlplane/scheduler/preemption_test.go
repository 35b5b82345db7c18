package scheduler_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/navarch/navarch/controlplane/admission/priority"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func createClasses(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	never := corev1.PreemptNever
	for _, pc := range []*schedulingv1.PriorityClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "high"}, Value: 1000},
		{ObjectMeta: metav1.ObjectMeta{Name: "polite"}, Value: 5000, PreemptionPolicy: &never},
	} {
		if _, err := c.SchedulingV1().PriorityClasses().Create(context.Background(), pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func cpuPod(name, class, cpu string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{PriorityClassName: class, Containers: []corev1.Container{{Name: "c", Image: "busybox",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}}}
}

func eventMessage(ctx context.Context, c kubernetes.Interface, pod, reason string) (string, error) {
	evs, err := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod + ",reason=" + reason})
	if err != nil {
		return "", err
	}
	if len(evs.Items) == 0 {
		return "", fmt.Errorf("no %s event for %s", reason, pod)
	}
	return evs.Items[len(evs.Items)-1].Message, nil
}

// TestPreemptionOnHollowNode: on one hollow node with 2 cpu, a pod of
// priority 0 filling it is preempted by a high-priority pod, which then
// runs; a pod whose class says preemptionPolicy Never waits instead.
func TestPreemptionOnHollowNode(t *testing.T) {
	s := apiservertest.Start(t, priority.New())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	createClasses(t, s.Client)
	cfg := sim.DefaultConfig(1)
	cfg.CPU = resource.MustParse("2")
	go sim.New(s.Client, cfg).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	pods := s.Client.CoreV1().Pods("default")
	running := func(name string) func() error {
		return func() error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("%s is %s on %q", name, p.Status.Phase, p.Spec.NodeName)
			}
			return nil
		}
	}

	if _, err := pods.Create(ctx, cpuPod("low", "", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "low running", running("low"))
	high, err := pods.Create(ctx, cpuPod("high", "high", "2"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *high.Spec.Priority != 1000 || *high.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Fatalf("admission gave priority %d, policy %s", *high.Spec.Priority, *high.Spec.PreemptionPolicy)
	}
	apiservertest.Eventually(t, 20*time.Second, "low preempted", func() error {
		if _, err := pods.Get(ctx, "low", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("low still there: %v", err)
		}
		return nil
	})
	apiservertest.Eventually(t, 20*time.Second, "high running", running("high"))
	msg, err := eventMessage(ctx, s.Client, "low", "Preempted")
	if err != nil || msg != fmt.Sprintf("Preempted by pod %s on node sim-0", high.UID) {
		t.Fatalf("Preempted event: %q, %v", msg, err)
	}

	if _, err := pods.Create(ctx, cpuPod("polite", "polite", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
	apiservertest.Eventually(t, 20*time.Second, "polite FailedScheduling", func() error {
		msg, err := eventMessage(ctx, s.Client, "polite", "FailedScheduling")
		if err == nil && msg != want {
			err = fmt.Errorf("message %q, want %q", msg, want)
		}
		return err
	})
	p, err := pods.Get(ctx, "high", metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		t.Fatalf("a Never pod disturbed high: %v %+v", err, p.Status)
	}
}

// TestPreemptionWaitsForVictims: without a kubelet a victim stays
// terminating, which shows the steps between: the victim is marked
// DisruptionTarget and deleted gracefully, the preemptor is nominated and
// not bound while the victim is there, and a pod of lower priority arriving
// meanwhile does not take the room; once the victim is gone the preemptor
// is bound.
func TestPreemptionWaitsForVictims(t *testing.T) {
	s := apiservertest.Start(t, priority.New())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	createClasses(t, s.Client)
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")}
	n, err := s.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Allocatable, n.Status.Capacity = alloc, alloc
	if _, err := s.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	go scheduler.New(s.Client).Run(ctx)
	pods := s.Client.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, cpuPod("victim", "", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "victim bound", func() error {
		p, err := pods.Get(ctx, "victim", metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "n1" {
			err = fmt.Errorf("victim on %q", p.Spec.NodeName)
		}
		return err
	})
	if _, err := pods.Create(ctx, cpuPod("high", "high", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "high nominated", func() error {
		p, err := pods.Get(ctx, "high", metav1.GetOptions{})
		if err == nil && p.Status.NominatedNodeName != "n1" {
			err = fmt.Errorf("high nominated to %q", p.Status.NominatedNodeName)
		}
		return err
	})
	v, err := pods.Get(ctx, "victim", metav1.GetOptions{})
	if err != nil || v.DeletionTimestamp == nil {
		t.Fatalf("victim not being deleted: %v", err)
	}
	var cond *corev1.PodCondition
	for i := range v.Status.Conditions {
		if v.Status.Conditions[i].Type == corev1.DisruptionTarget {
			cond = &v.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != "PreemptionByScheduler" ||
		!strings.Contains(cond.Message, "preempting to accommodate a higher priority pod") {
		t.Fatalf("victim's DisruptionTarget condition: %+v", cond)
	}
	// The victim still holds the node, so the preemptor cannot be bound yet.
	if p, _ := pods.Get(ctx, "high", metav1.GetOptions{}); p.Spec.NodeName != "" {
		t.Fatalf("high bound to %s while the victim terminates", p.Spec.NodeName)
	}

	if _, err := pods.Create(ctx, cpuPod("sneaky", "", "1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "sneaky tried", func() error {
		_, err := eventMessage(ctx, s.Client, "sneaky", "FailedScheduling")
		return err
	})
	if err := pods.Delete(ctx, "victim", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "high bound", func() error {
		p, err := pods.Get(ctx, "high", metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "n1" {
			err = fmt.Errorf("high on %q", p.Spec.NodeName)
		}
		return err
	})
	// Had sneaky taken the room, high would have had to preempt it and
	// would still be waiting for it to terminate.
	sn, err := pods.Get(ctx, "sneaky", metav1.GetOptions{})
	if err != nil || sn.Spec.NodeName != "" || sn.DeletionTimestamp != nil {
		t.Fatalf("sneaky: %v, node %q", err, sn.Spec.NodeName)
	}
}
