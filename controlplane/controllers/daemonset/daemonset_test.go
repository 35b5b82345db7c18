package daemonset_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/daemonset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 30*time.Second, what, f)
}

func start(t *testing.T, nodes int) (*apiservertest.Server, context.Context) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go sim.New(s.Client, sim.DefaultConfig(nodes)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	go daemonset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	return s, ctx
}

func newDS(name string, mutate func(*corev1.PodSpec)) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: name + ":1"}}}}}}
	if mutate != nil {
		mutate(&ds.Spec.Template.Spec)
	}
	return ds
}

// running lists, by node, the live Running pods of a DaemonSet, failing if
// a node has more than one.
func running(ctx context.Context, c kubernetes.Interface, name string) (map[string]corev1.Pod, error) {
	list, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Status.Phase != corev1.PodRunning {
			return nil, fmt.Errorf("pod %s is %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		}
		if other, dup := out[p.Spec.NodeName]; dup {
			return nil, fmt.Errorf("node %s has pods %s and %s", p.Spec.NodeName, other.Name, p.Name)
		}
		out[p.Spec.NodeName] = p
	}
	return out, nil
}

// onNodes waits until the DaemonSet runs exactly one pod on each of nodes
// (and none elsewhere), all with image, and its status says so.
func onNodes(t *testing.T, ctx context.Context, c kubernetes.Interface, name, image string, nodes ...string) map[string]corev1.Pod {
	t.Helper()
	return covers(t, ctx, c, name, image, nodes, 0)
}

// covers is onNodes where misscheduled of the nodes run a pod they should
// not (a NoSchedule taint added after the pod).
func covers(t *testing.T, ctx context.Context, c kubernetes.Interface, name, image string, nodes []string, misscheduled int32) map[string]corev1.Pod {
	t.Helper()
	sort.Strings(nodes)
	var pods map[string]corev1.Pod
	eventually(t, fmt.Sprintf("daemonset %s on %v with %s", name, nodes, image), func() error {
		var err error
		if pods, err = running(ctx, c, name); err != nil {
			return err
		}
		var got []string
		for n, p := range pods {
			got = append(got, n)
			if img := p.Spec.Containers[0].Image; img != image {
				return fmt.Errorf("pod %s on %s runs %s", p.Name, n, img)
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(nodes, ",") {
			return fmt.Errorf("pods on %v", got)
		}
		ds, err := c.AppsV1().DaemonSets("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, want := ds.Status, int32(len(nodes))-misscheduled
		if st.ObservedGeneration != ds.Generation || st.DesiredNumberScheduled != want || st.CurrentNumberScheduled != want ||
			st.NumberReady != want || st.NumberAvailable != want || st.UpdatedNumberScheduled != want || st.NumberMisscheduled != misscheduled || st.NumberUnavailable != 0 {
			return fmt.Errorf("generation %d, status %+v", ds.Generation, st)
		}
		return nil
	})
	return pods
}

// TestDaemonSetFollowsNodes covers hollow nodes with a DaemonSet as they
// come, change labels and taints, and as its pods go and its template
// changes.
func TestDaemonSetFollowsNodes(t *testing.T) {
	s, ctx := start(t, 3)
	dss := s.Client.AppsV1().DaemonSets("default")
	pods := s.Client.CoreV1().Pods("default")
	nodes := s.Client.CoreV1().Nodes()

	if _, err := dss.Create(ctx, newDS("agent", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := onNodes(t, ctx, s.Client, "agent", "agent:1", "sim-0", "sim-1", "sim-2")
	ds, _ := dss.Get(ctx, "agent", metav1.GetOptions{})
	// The pods are made as upstream makes them.
	for node, p := range got {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.UID != ds.UID || ref.Kind != "DaemonSet" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
			t.Errorf("pod %s: owner %+v", p.Name, ref)
		}
		if p.Labels["pod-template-generation"] != "1" || p.Labels[daemonset.HashLabel] == "" {
			t.Errorf("pod %s: labels %v", p.Name, p.Labels)
		}
		terms := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchFields) != 1 || terms[0].MatchFields[0].Key != "metadata.name" || terms[0].MatchFields[0].Values[0] != node {
			t.Errorf("pod %s on %s: node affinity %+v", p.Name, node, terms)
		}
		tolerates := map[string]bool{}
		for _, tol := range p.Spec.Tolerations {
			tolerates[tol.Key+":"+string(tol.Effect)] = tol.Operator == corev1.TolerationOpExists && tol.TolerationSeconds == nil
		}
		for _, want := range []string{"node.kubernetes.io/not-ready:NoExecute", "node.kubernetes.io/unreachable:NoExecute",
			"node.kubernetes.io/disk-pressure:NoSchedule", "node.kubernetes.io/memory-pressure:NoSchedule",
			"node.kubernetes.io/pid-pressure:NoSchedule", "node.kubernetes.io/unschedulable:NoSchedule"} {
			if !tolerates[want] {
				t.Errorf("pod %s: no toleration %s in %+v", p.Name, want, p.Spec.Tolerations)
			}
		}
		if tolerates["node.kubernetes.io/network-unavailable:NoSchedule"] {
			t.Errorf("pod %s tolerates network-unavailable without hostNetwork", p.Name)
		}
	}

	// A node selector limits the nodes; a node taking the label gets a pod
	// and loses it with the label.
	picky := newDS("picky", func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{"role": "edge"} })
	if _, err := dss.Create(ctx, picky, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	label := func(node, value string) {
		t.Helper()
		patch := `{"metadata":{"labels":{"role":null}}}`
		if value != "" {
			patch = fmt.Sprintf(`{"metadata":{"labels":{"role":%q}}}`, value)
		}
		if _, err := nodes.Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	onNodes(t, ctx, s.Client, "picky", "picky:1")
	label("sim-1", "edge")
	onNodes(t, ctx, s.Client, "picky", "picky:1", "sim-1")
	label("sim-1", "")
	onNodes(t, ctx, s.Client, "picky", "picky:1")

	// A fourth node, from another set of hollow nodes, gets a pod.
	extra := sim.DefaultConfig(1)
	extra.Prefix = "extra-"
	go sim.New(s.Client, extra).Run(ctx)
	got = onNodes(t, ctx, s.Client, "agent", "agent:1", "extra-0", "sim-0", "sim-1", "sim-2")

	// A deleted pod is made again, and so is a failed one.
	if err := pods.Delete(ctx, got["sim-1"].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	failed := got["sim-2"]
	failed.Status.Phase = corev1.PodFailed
	if _, err := pods.UpdateStatus(ctx, &failed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replaced pods", func() error {
		now, err := running(ctx, s.Client, "agent")
		if err != nil {
			return err
		}
		for _, n := range []string{"sim-1", "sim-2"} {
			if p, ok := now[n]; !ok || p.UID == got[n].UID {
				return fmt.Errorf("pod on %s not replaced", n)
			}
		}
		return nil
	})
	onNodes(t, ctx, s.Client, "agent", "agent:1", "extra-0", "sim-0", "sim-1", "sim-2")

	// A template update rolls every pod to the new revision.
	setImage := func(image string) {
		t.Helper()
		cur, err := dss.Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Template.Spec.Containers[0].Image = image
		if _, err := dss.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	worst := watchUnavailable(t, ctx, s.Client, "agent", "extra-0", "sim-0", "sim-1", "sim-2")
	setImage("agent:2")
	got = onNodes(t, ctx, s.Client, "agent", "agent:2", "extra-0", "sim-0", "sim-1", "sim-2")
	if n := worst(); n != 1 {
		t.Errorf("%d nodes were without a ready pod at once during the rollout, want maxUnavailable (1)", n)
	}
	revs := revisions(t, ctx, s.Client, "agent")
	if len(revs) != 2 || revs[0].Revision != 1 || revs[1].Revision != 2 {
		t.Fatalf("revisions after the update: %v", revNumbers(revs))
	}
	for _, p := range got {
		if p.Labels[daemonset.HashLabel] != revs[1].Labels[daemonset.HashLabel] || p.Labels["pod-template-generation"] != "2" {
			t.Errorf("pod %s: labels %v, want revision %s", p.Name, p.Labels, revs[1].Name)
		}
	}
	// Going back to the first template renumbers its revision.
	setImage("agent:1")
	got = onNodes(t, ctx, s.Client, "agent", "agent:1", "extra-0", "sim-0", "sim-1", "sim-2")
	revs = revisions(t, ctx, s.Client, "agent")
	if len(revs) != 2 || revs[1].Revision != 3 || !strings.Contains(string(revs[1].Data.Raw), `"agent:1"`) {
		t.Fatalf("revisions after going back: %v", revNumbers(revs))
	}

	// A tainted node is skipped unless tolerated; NoExecute evicts.
	taint := func(node string, effect corev1.TaintEffect) {
		t.Helper()
		n, err := nodes.Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "dedicated", Value: "infra", Effect: effect})
		if _, err := nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	taint("sim-2", corev1.TaintEffectNoSchedule)
	before := got["sim-2"].UID
	got = covers(t, ctx, s.Client, "agent", "agent:1", []string{"extra-0", "sim-0", "sim-1", "sim-2"}, 1)
	if got["sim-2"].UID != before {
		t.Errorf("a NoSchedule taint replaced the pod on sim-2")
	}
	if _, err := dss.Create(ctx, newDS("plain", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tolerant := newDS("tolerant", func(s *corev1.PodSpec) {
		s.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "infra"}}
	})
	if _, err := dss.Create(ctx, tolerant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	onNodes(t, ctx, s.Client, "plain", "plain:1", "extra-0", "sim-0", "sim-1")
	onNodes(t, ctx, s.Client, "tolerant", "tolerant:1", "extra-0", "sim-0", "sim-1", "sim-2")
	taint("sim-0", corev1.TaintEffectNoExecute)
	onNodes(t, ctx, s.Client, "plain", "plain:1", "extra-0", "sim-1")
	covers(t, ctx, s.Client, "agent", "agent:1", []string{"extra-0", "sim-1", "sim-2"}, 1)
	onNodes(t, ctx, s.Client, "tolerant", "tolerant:1", "extra-0", "sim-0", "sim-1", "sim-2")
}

// watchUnavailable follows a DaemonSet's pods through a watch, so through
// every state the API went through, and returns a function that stops and
// tells the most nodes seen at once without a ready pod.
func watchUnavailable(t *testing.T, ctx context.Context, c kubernetes.Interface, name string, nodes ...string) func() int {
	t.Helper()
	opts := metav1.ListOptions{LabelSelector: "app=" + name}
	list, err := c.CoreV1().Pods("default").List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := c.CoreV1().Pods("default").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	state := map[types.UID]*corev1.Pod{}
	for i := range list.Items {
		state[list.Items[i].UID] = &list.Items[i]
	}
	unavailable := func() int {
		n := 0
		for _, node := range nodes {
			ok := false
			for _, p := range state {
				for _, cond := range p.Status.Conditions {
					if p.Spec.NodeName == node && p.DeletionTimestamp == nil && cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
						ok = true
					}
				}
			}
			if !ok {
				n++
			}
		}
		return n
	}
	result := make(chan int, 1)
	go func() {
		most := unavailable()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(state, p.UID)
			} else {
				state[p.UID] = p
			}
			most = max(most, unavailable())
		}
		result <- most
	}()
	return func() int {
		w.Stop()
		return <-result
	}
}

func revisions(t *testing.T, ctx context.Context, c kubernetes.Interface, name string) []appsv1.ControllerRevision {
	t.Helper()
	list, err := c.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Revision < list.Items[j].Revision })
	return list.Items
}

func revNumbers(revs []appsv1.ControllerRevision) []string {
	var out []string
	for _, r := range revs {
		out = append(out, fmt.Sprintf("%s=%d", r.Name, r.Revision))
	}
	return out
}

// TestDaemonSetOnDelete keeps old pods after a template change until they
// are deleted, and adopts an orphan that the selector matches.
func TestDaemonSetOnDelete(t *testing.T) {
	s, ctx := start(t, 2)
	dss := s.Client.AppsV1().DaemonSets("default")
	pods := s.Client.CoreV1().Pods("default")

	// An orphan on sim-0 is adopted instead of getting a second pod there.
	orphan := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: map[string]string{"app": "od"}},
		Spec: corev1.PodSpec{NodeName: "sim-0", Containers: []corev1.Container{{Name: "c", Image: "od:1"}}}}
	if _, err := pods.Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := newDS("od", nil)
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	created, err := dss.Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The orphan has no revision label, so it is not up to date.
	var got map[string]corev1.Pod
	eventually(t, "the orphan adopted, a pod made on sim-1", func() error {
		if got, err = running(ctx, s.Client, "od"); err != nil {
			return err
		}
		if p := got["sim-0"]; p.Name != "orphan" || metav1.GetControllerOf(&p) == nil || metav1.GetControllerOf(&p).UID != created.UID {
			return fmt.Errorf("pod on sim-0: %q owned by %+v, want the orphan adopted", p.Name, metav1.GetControllerOf(&p))
		}
		if _, ok := got["sim-1"]; !ok || len(got) != 2 {
			return fmt.Errorf("pods on %v", got)
		}
		d, err := dss.Get(ctx, "od", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st := d.Status; st.DesiredNumberScheduled != 2 || st.CurrentNumberScheduled != 2 || st.NumberReady != 2 || st.UpdatedNumberScheduled != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	cur, _ := dss.Get(ctx, "od", metav1.GetOptions{})
	cur.Spec.Template.Spec.Containers[0].Image = "od:2"
	if _, err := dss.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status after the template change", func() error {
		d, err := dss.Get(ctx, "od", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedNumberScheduled != 0 || d.Status.CurrentNumberScheduled != 2 {
			return fmt.Errorf("status %+v", d.Status)
		}
		return nil
	})
	if now, err := running(ctx, s.Client, "od"); err != nil || now["sim-1"].UID != got["sim-1"].UID || now["sim-0"].UID != got["sim-0"].UID {
		t.Fatalf("OnDelete replaced pods by itself: %v", err)
	}
	if err := pods.Delete(ctx, got["sim-1"].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted pod replaced with the new template", func() error {
		now, err := running(ctx, s.Client, "od")
		if err != nil {
			return err
		}
		if p, ok := now["sim-1"]; !ok || p.Spec.Containers[0].Image != "od:2" {
			return fmt.Errorf("pod on sim-1: %+v", p.Spec.Containers)
		}
		if p, ok := now["sim-0"]; !ok || p.Spec.Containers[0].Image != "od:1" {
			return fmt.Errorf("pod on sim-0: %+v", p.Spec.Containers)
		}
		d, err := dss.Get(ctx, "od", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.UpdatedNumberScheduled != 1 || d.Status.NumberReady != 2 {
			return fmt.Errorf("status %+v", d.Status)
		}
		return nil
	})

	// A pod whose labels stop matching is released, and replaced.
	if _, err := pods.Patch(ctx, "orphan", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"other"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relabelled pod released", func() error {
		p, err := pods.Get(ctx, "orphan", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ref := metav1.GetControllerOf(p); ref != nil {
			return fmt.Errorf("still owned by %s", ref.Name)
		}
		return nil
	})
	onNodes(t, ctx, s.Client, "od", "od:2", "sim-0", "sim-1")
}
