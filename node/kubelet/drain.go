package kubelet

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Drain cordons the node and deletes its pods, as `kubectl drain` does
// (DaemonSet pods stay: their controller would put them back), and waits
// until the kubelet, still running, has terminated them all. The agent
// calls it on stop with --drain-on-stop.
func (k *Kubelet) Drain(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	for attempt := 0; ; attempt++ {
		node, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("drain node %s: %w", k.cfg.NodeName, err)
		}
		if node.Spec.Unschedulable {
			break
		}
		node.Spec.Unschedulable = true
		if _, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err == nil {
			break
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return fmt.Errorf("cordon node %s: %w", k.cfg.NodeName, err)
		}
	}
	sel := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()}
	for {
		list, err := k.client.CoreV1().Pods("").List(ctx, sel)
		if err != nil {
			return fmt.Errorf("drain node %s: %w", k.cfg.NodeName, err)
		}
		left := 0
		for i := range list.Items {
			p := &list.Items[i]
			if ownedByDaemonSet(p) {
				continue
			}
			left++
			if p.DeletionTimestamp == nil {
				err := k.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
				if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					return fmt.Errorf("drain node %s: pod %s/%s: %w", k.cfg.NodeName, p.Namespace, p.Name, err)
				}
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain node %s: %d pods left: %w", k.cfg.NodeName, left, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ownedByDaemonSet(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}
