// Package defaulttolerationseconds is the DefaultTolerationSeconds
// admission step: every pod created gets a bounded toleration of the
// node.kubernetes.io/not-ready and node.kubernetes.io/unreachable NoExecute
// taints (300 s by default), unless it already has one, so that its pods
// leave a failed node after a while instead of at once or never.
package defaulttolerationseconds

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry"
)

// DefaultSeconds is upstream's default for both tolerations.
const DefaultSeconds = 300

// Admitter adds the tolerations.
type Admitter struct {
	notReady, unreachable int64
}

// New returns the step with the given tolerationSeconds
// (--default-not-ready-toleration-seconds, --default-unreachable-toleration-seconds).
func New(notReadySeconds, unreachableSeconds int64) *Admitter {
	return &Admitter{notReady: notReadySeconds, unreachable: unreachableSeconds}
}

var _ apiserver.Admitter = (*Admitter)(nil)

// Name implements apiserver.Admitter.
func (*Admitter) Name() string { return "DefaultTolerationSeconds" }

// AdmitCreate implements apiserver.Admitter.
func (a *Admitter) AdmitCreate(_ context.Context, _ apiserver.Reader, res *registry.Resource, obj runtime.Object) error {
	if res.Group != "" || res.Plural != "pods" {
		return nil
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	pod.Spec.Tolerations = addDefaults(pod.Spec.Tolerations, a.notReady, a.unreachable)
	return nil
}

// addDefaults appends the two tolerations a pod lacks. A toleration counts
// as one already there when it names the taint's key or no key (a wildcard)
// and the NoExecute effect or no effect, whatever its operator and seconds,
// as upstream judges it: the pod's own choice wins.
func addDefaults(tols []corev1.Toleration, notReady, unreachable int64) []corev1.Toleration {
	covers := func(key string) bool {
		for _, t := range tols {
			if (t.Key == key || t.Key == "") && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				return true
			}
		}
		return false
	}
	hasNotReady, hasUnreachable := covers(corev1.TaintNodeNotReady), covers(corev1.TaintNodeUnreachable)
	if !hasNotReady {
		tols = append(tols, corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &notReady})
	}
	if !hasUnreachable {
		secs := unreachable
		tols = append(tols, corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs})
	}
	return tols
}
