// Package job runs the pods of batch/v1 Jobs: it keeps at most
// spec.parallelism pods active until spec.completions of them have
// succeeded (one, for a work-queue Job without completions), in the
// NonIndexed or Indexed completion mode, and fails the Job past its
// backoffLimit or activeDeadlineSeconds. Finished pods are counted through
// the batch.kubernetes.io/job-tracking finalizer, as upstream does, so that
// none is counted twice or lost: a finished pod's uid is first written to
// status.uncountedTerminatedPods, then its finalizer is removed, then it
// moves into the succeeded or failed counters. Deleting finished Jobs
// (ttlSecondsAfterFinished) is the ttlafterfinished controller's.
package job

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// Names upstream gives to what the Job controller puts on pods.
const (
	TrackingFinalizer      = "batch.kubernetes.io/job-tracking"
	labelJobName           = "batch.kubernetes.io/job-name"
	CompletionIndexKey     = "batch.kubernetes.io/job-completion-index" // annotation and label
	CompletionIndexEnvName = "JOB_COMPLETION_INDEX"
)

// Reasons and messages of the Job's conditions, as upstream words them.
const (
	reasonCompletions     = "CompletionsReached"
	messageCompletions    = "Reached expected number of succeeded pods"
	reasonBackoffLimit    = "BackoffLimitExceeded"
	messageBackoffLimit   = "Job has reached the specified backoff limit"
	reasonDeadline        = "DeadlineExceeded"
	messageDeadline       = "Job was active longer than specified deadline"
	maxBurst              = 500
	maxBackoff            = 6 * time.Minute
	expectationsTimeout   = time.Minute
	defaultBackoffBase    = 10 * time.Second
	completionIndexEnvRef = "metadata.annotations['" + CompletionIndexKey + "']"
)

// Controller is the Job controller.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string] // namespace/name
	jobs    batchlisters.JobLister
	pods    corelisters.PodLister

	// Clock tells the time for deadlines and back-off; tests may replace it
	// before Run.
	Clock clock.PassiveClock
	// BackoffBase is the delay before a failed pod is replaced, doubled for
	// each further failure since the last success, up to six minutes
	// (upstream: 10 s). Tests shorten it.
	BackoffBase time.Duration

	mu sync.Mutex
	// expectations are, per Job, the pods a sync created or deleted that the
	// pod informer has not shown yet; until it has (or a minute passes) the
	// Job is not synced again, so no pod is created twice.
	expectations map[string]*expectation
	// removing holds the uids of pods whose finalizer removal this
	// controller sent (they have been counted) until the informer shows the
	// pod without it, so that a stale cache never counts a pod twice.
	removing map[types.UID]bool
}

type expectation struct {
	created map[string]bool    // pod names
	deleted map[types.UID]bool // pods not yet seen terminating
	at      time.Time
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, Clock: clock.RealClock{}, BackoffBase: defaultBackoffBase,
		expectations: map[string]*expectation{}, removing: map[types.UID]bool{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "job"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	jobInf, podInf := c.factory.Batch().V1().Jobs(), c.factory.Core().V1().Pods()
	c.jobs, c.pods = jobInf.Lister(), podInf.Lister()
	enqueueJob := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	jobInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueJob,
		UpdateFunc: func(_, obj interface{}) { enqueueJob(obj) }, DeleteFunc: enqueueJob})
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podEvent,
		UpdateFunc: func(_, obj interface{}) { c.podEvent(obj) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				c.mu.Lock()
				delete(c.removing, p.UID)
				c.mu.Unlock()
			}
			c.podEvent(obj)
		},
	})
	c.factory.Start(ctx.Done())
	return workloop.Run(ctx, "job", c.queue, 4, c.sync, jobInf.Informer().HasSynced, podInf.Informer().HasSynced)
}

// podEvent queues the Job that controls a pod, and forgets a finalizer
// removal once the pod shows it done.
func (c *Controller) podEvent(obj interface{}) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if !hasFinalizer(p) {
		c.mu.Lock()
		delete(c.removing, p.UID)
		c.mu.Unlock()
	}
	if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "Job" {
		c.queue.Add(p.Namespace + "/" + ref.Name)
	}
}

func hasFinalizer(p *corev1.Pod) bool {
	for _, f := range p.Finalizers {
		if f == TrackingFinalizer {
			return true
		}
	}
	return false
}

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func condition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if job.Status.Conditions[i].Type == t && job.Status.Conditions[i].Status == corev1.ConditionTrue {
			return &job.Status.Conditions[i]
		}
	}
	return nil
}

// Finished says whether a Job has its Complete or Failed condition.
func Finished(job *batchv1.Job) bool {
	return condition(job, batchv1.JobComplete) != nil || condition(job, batchv1.JobFailed) != nil
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	job, err := c.jobs.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Its pods go with it through the garbage collector; they must not
		// wait for a finalizer nobody will remove. (Rare: a full list.)
		c.mu.Lock()
		delete(c.expectations, key)
		c.mu.Unlock()
		all, err := c.pods.Pods(ns).List(labels.Everything())
		if err != nil {
			return err
		}
		return c.releasePods(ctx, strays(all, name, ""))
	}
	if err != nil {
		return err
	}
	// Pods of an earlier Job of the same name carry its name label.
	sameName, err := c.pods.Pods(ns).List(labels.SelectorFromSet(labels.Set{labelJobName: name}))
	if err != nil {
		return err
	}
	if err := c.releasePods(ctx, strays(sameName, name, job.UID)); err != nil {
		return err
	}
	sel, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil || job.Spec.Selector == nil {
		return nil // validation prevents it; nothing to do until the Job changes
	}
	all, err := c.pods.Pods(ns).List(sel)
	if err != nil {
		return err
	}
	var owned []*corev1.Pod
	for _, p := range all {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == job.UID {
			owned = append(owned, p)
		}
	}
	if Finished(job) || job.DeletionTimestamp != nil {
		return c.releasePods(ctx, owned)
	}
	if wait := c.pending(key, all); wait {
		return nil
	}
	if err := c.syncJob(ctx, key, job.DeepCopy(), owned); err != nil {
		return fmt.Errorf("job %s/%s: %w", ns, name, err)
	}
	return nil
}

// strays are pods that name a Job called name as their controller, but not
// the Job of that name now (uid; empty when there is none), and still carry
// the tracking finalizer.
func strays(all []*corev1.Pod, name string, uid types.UID) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range all {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "Job" && ref.Name == name && ref.UID != uid && hasFinalizer(p) {
			out = append(out, p)
		}
	}
	return out
}

// releasePods removes the tracking finalizer from pods that will not be
// counted.
func (c *Controller) releasePods(ctx context.Context, pods []*corev1.Pod) error {
	for _, p := range pods {
		if hasFinalizer(p) {
			if err := c.removeFinalizer(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Controller) removeFinalizer(ctx context.Context, p *corev1.Pod) error {
	patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{
		"$deleteFromPrimitiveList/finalizers": []string{TrackingFinalizer}, "uid": p.UID}})
	_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer of pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// pending says whether pods this controller created or deleted for key are
// not all in the cache yet, forgetting those that are.
func (c *Controller) pending(key string, all []*corev1.Pod) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.expectations[key]
	if e == nil {
		return false
	}
	present := map[types.UID]bool{}
	for _, p := range all {
		delete(e.created, p.Name)
		if p.DeletionTimestamp != nil {
			delete(e.deleted, p.UID)
		} else {
			present[p.UID] = true
		}
	}
	for uid := range e.deleted {
		if !present[uid] {
			delete(e.deleted, uid)
		}
	}
	if (len(e.created) == 0 && len(e.deleted) == 0) || time.Since(e.at) > expectationsTimeout {
		delete(c.expectations, key)
		return false
	}
	c.queue.AddAfter(key, expectationsTimeout) // in case the events never come
	return true
}

func (c *Controller) expect(key string) *expectation {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.expectations[key]
	if e == nil {
		e = &expectation{created: map[string]bool{}, deleted: map[types.UID]bool{}}
		c.expectations[key] = e
	}
	e.at = time.Now()
	return e
}

// view is what one sync sees of a Job's pods.
type view struct {
	active, terminating []*corev1.Pod
	ready               int32
	byUID               map[types.UID]*corev1.Pod
}

func (c *Controller) syncJob(ctx context.Context, key string, job *batchv1.Job, owned []*corev1.Pod) error {
	now := c.Clock.Now()
	old := job.Status.DeepCopy()
	st := &job.Status
	suspended := ptr.Deref(job.Spec.Suspend, false)
	indexed := ptr.Deref(job.Spec.CompletionMode, batchv1.NonIndexedCompletion) == batchv1.IndexedCompletion
	completions := job.Spec.Completions
	onlyFailed := ptr.Deref(job.Spec.PodReplacementPolicy, batchv1.TerminatingOrFailed) == batchv1.Failed

	// Sort the pods out, and find the finished ones not yet recorded.
	if st.UncountedTerminatedPods == nil {
		st.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
	uncounted := map[types.UID]bool{}
	for _, u := range st.UncountedTerminatedPods.Succeeded {
		uncounted[u] = true
	}
	for _, u := range st.UncountedTerminatedPods.Failed {
		uncounted[u] = true
	}
	v := view{byUID: map[types.UID]*corev1.Pod{}}
	c.mu.Lock()
	removing := map[types.UID]bool{}
	for _, p := range owned {
		if c.removing[p.UID] {
			removing[p.UID] = true
		}
	}
	c.mu.Unlock()
	var unrecorded, release []*corev1.Pod
	for _, p := range owned {
		v.byUID[p.UID] = p
		switch {
		case !isTerminal(p) && p.DeletionTimestamp == nil:
			v.active = append(v.active, p)
			if isReady(p) {
				v.ready++
			}
		case !isTerminal(p):
			v.terminating = append(v.terminating, p)
		}
		if !hasFinalizer(p) || uncounted[p.UID] || removing[p.UID] {
			continue
		}
		switch {
		case isTerminal(p):
			unrecorded = append(unrecorded, p)
		case p.DeletionTimestamp != nil && !onlyFailed:
			// A pod being deleted counts as failed, as upstream (it may
			// never reach a phase), except pods a suspension removes.
			if suspended {
				release = append(release, p)
			} else {
				unrecorded = append(unrecorded, p)
			}
		}
	}
	if err := c.releasePods(ctx, release); err != nil {
		return err
	}

	// Record, then release, then count the finished pods.
	if len(unrecorded) > 0 {
		for _, p := range unrecorded {
			if p.Status.Phase == corev1.PodSucceeded {
				st.UncountedTerminatedPods.Succeeded = append(st.UncountedTerminatedPods.Succeeded, p.UID)
			} else {
				st.UncountedTerminatedPods.Failed = append(st.UncountedTerminatedPods.Failed, p.UID)
			}
			uncounted[p.UID] = true
		}
		if st.StartTime == nil && !suspended {
			st.StartTime = &metav1.Time{Time: now}
		}
		updated, err := c.client.BatchV1().Jobs(job.Namespace).UpdateStatus(ctx, job, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		job, st = updated, &updated.Status
		old = updated.Status.DeepCopy()
	}
	var removeErr error
	released := map[types.UID]bool{}
	for uid := range uncounted {
		p := v.byUID[uid]
		if p == nil || !hasFinalizer(p) || removing[uid] {
			released[uid] = true
			continue
		}
		c.mu.Lock()
		c.removing[uid] = true
		c.mu.Unlock()
		if err := c.removeFinalizer(ctx, p); err != nil {
			c.mu.Lock()
			delete(c.removing, uid)
			c.mu.Unlock()
			removeErr = err
			continue
		}
		released[uid] = true
	}
	done := parseIndexes(st.CompletedIndexes, ptr.Deref(completions, 0))
	keep := func(uids []types.UID, count func(types.UID)) []types.UID {
		var out []types.UID
		for _, u := range uids {
			if released[u] {
				count(u)
			} else {
				out = append(out, u)
			}
		}
		return out
	}
	st.UncountedTerminatedPods.Succeeded = keep(st.UncountedTerminatedPods.Succeeded, func(u types.UID) {
		if !indexed {
			st.Succeeded++
		} else if p := v.byUID[u]; p != nil {
			if ix, ok := podIndex(p); ok && ix < int(ptr.Deref(completions, 0)) {
				done[ix] = true
			}
		}
	})
	st.UncountedTerminatedPods.Failed = keep(st.UncountedTerminatedPods.Failed, func(types.UID) { st.Failed++ })
	if indexed {
		st.Succeeded = int32(len(done))
		st.CompletedIndexes = formatIndexes(done)
	}
	stillUncounted := len(st.UncountedTerminatedPods.Succeeded) + len(st.UncountedTerminatedPods.Failed)

	// Decide where the Job stands.
	var requeue time.Duration
	if condition(job, batchv1.JobFailureTarget) == nil && condition(job, batchv1.JobSuccessCriteriaMet) == nil {
		deadline := job.Spec.ActiveDeadlineSeconds
		switch {
		case st.Failed > ptr.Deref(job.Spec.BackoffLimit, 6) || restartsExceed(job, v.active):
			setCondition(st, batchv1.JobFailureTarget, reasonBackoffLimit, messageBackoffLimit, now)
		case deadline != nil && st.StartTime != nil && !suspended && !now.Before(st.StartTime.Add(time.Duration(*deadline)*time.Second)):
			setCondition(st, batchv1.JobFailureTarget, reasonDeadline, messageDeadline, now)
		case succeededEnough(job, st, len(v.active)):
			setCondition(st, batchv1.JobSuccessCriteriaMet, reasonCompletions, messageCompletions, now)
		case deadline != nil && st.StartTime != nil && !suspended:
			requeue = st.StartTime.Add(time.Duration(*deadline) * time.Second).Sub(now)
		}
	}
	delta := 0 // pods this sync created, less those it deleted
	finishing := condition(job, batchv1.JobFailureTarget) != nil || condition(job, batchv1.JobSuccessCriteriaMet) != nil
	switch {
	case finishing:
		if err := c.deletePods(ctx, key, job, v.active); err != nil {
			return err
		}
		if len(v.active) == 0 && len(v.terminating) == 0 && stillUncounted == 0 && removeErr == nil {
			if ft := condition(job, batchv1.JobFailureTarget); ft != nil {
				setCondition(st, batchv1.JobFailed, ft.Reason, ft.Message, now)
				c.event(ctx, job, corev1.EventTypeWarning, ft.Reason, ft.Message)
			} else {
				setCondition(st, batchv1.JobComplete, reasonCompletions, messageCompletions, now)
				st.CompletionTime = &metav1.Time{Time: now}
				c.event(ctx, job, corev1.EventTypeNormal, "Completed", "Job completed")
			}
		}
		v.active = nil
	case suspended:
		if err := c.deletePods(ctx, key, job, v.active); err != nil {
			return err
		}
		v.active = nil
		if condition(job, batchv1.JobSuspended) == nil {
			setCondition(st, batchv1.JobSuspended, "JobSuspended", "Job suspended", now)
			c.event(ctx, job, corev1.EventTypeNormal, "Suspended", "Job suspended")
		}
	default:
		if condition(job, batchv1.JobSuspended) != nil {
			// Resumed: the active deadline counts from now.
			setConditionStatus(st, batchv1.JobSuspended, corev1.ConditionFalse, "JobResumed", "Job resumed", now)
			st.StartTime = &metav1.Time{Time: now}
			c.event(ctx, job, corev1.EventTypeNormal, "Resumed", "Job resumed")
		}
		if st.StartTime == nil {
			st.StartTime = &metav1.Time{Time: now}
		}
		var err error
		var wait time.Duration
		delta, wait, err = c.managePods(ctx, key, job, v, done, onlyFailed, now)
		if wait > 0 && (requeue == 0 || wait < requeue) {
			requeue = wait
		}
		if err != nil {
			return err
		}
	}

	st.Active = int32(len(v.active) + delta)
	st.Ready = ptr.To(v.ready)
	st.Terminating = ptr.To(int32(len(v.terminating)))
	if finishing {
		st.Ready = ptr.To[int32](0)
	}
	if !apiequality.Semantic.DeepEqual(old, st) {
		if _, err := c.client.BatchV1().Jobs(job.Namespace).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	if requeue > 0 {
		c.queue.AddAfter(key, requeue)
	}
	return removeErr
}

// restartsExceed says whether, with restartPolicy OnFailure (the kubelet
// restarts failed containers in place, so pods do not fail), the restarts of
// the active pods reach the backoff limit, as upstream counts them.
func restartsExceed(job *batchv1.Job, active []*corev1.Pod) bool {
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		return false
	}
	restarts := int32(0)
	for _, p := range active {
		for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, cs := range list {
				restarts += cs.RestartCount
			}
		}
	}
	limit := ptr.Deref(job.Spec.BackoffLimit, 6)
	if limit == 0 {
		return restarts > 0
	}
	return restarts >= limit
}

// succeededEnough says whether a Job's success criteria are met.
func succeededEnough(job *batchv1.Job, st *batchv1.JobStatus, active int) bool {
	if job.Spec.Completions == nil {
		// A work queue: done once a pod succeeded and the others ended.
		return st.Succeeded > 0 && active == 0
	}
	return st.Succeeded >= *job.Spec.Completions
}

func setCondition(st *batchv1.JobStatus, t batchv1.JobConditionType, reason, message string, now time.Time) {
	setConditionStatus(st, t, corev1.ConditionTrue, reason, message, now)
}

func setConditionStatus(st *batchv1.JobStatus, t batchv1.JobConditionType, status corev1.ConditionStatus, reason, message string, now time.Time) {
	c := batchv1.JobCondition{Type: t, Status: status, Reason: reason, Message: message,
		LastProbeTime: metav1.Time{Time: now}, LastTransitionTime: metav1.Time{Time: now}}
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status == status {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// managePods creates or deletes pods towards what the Job wants active. It
// returns the pods created less those deleted, and how long to wait when a
// failure's back-off holds creation back.
func (c *Controller) managePods(ctx context.Context, key string, job *batchv1.Job, v view, done map[int]bool, onlyFailed bool, now time.Time) (int, time.Duration, error) {
	parallelism := int(ptr.Deref(job.Spec.Parallelism, 1))
	busy := len(v.active)
	if onlyFailed {
		busy += len(v.terminating) // replacements wait until those are gone
	}
	var surplus []*corev1.Pod
	var toCreate []int // completion indexes, or -1 for NonIndexed pods
	if ptr.Deref(job.Spec.CompletionMode, batchv1.NonIndexedCompletion) == batchv1.IndexedCompletion {
		completions := int(ptr.Deref(job.Spec.Completions, 0))
		taken := map[int]bool{}
		var valid []*corev1.Pod
		for _, p := range v.active {
			ix, ok := podIndex(p)
			if !ok || ix >= completions || done[ix] || taken[ix] {
				surplus = append(surplus, p)
				continue
			}
			taken[ix] = true
			valid = append(valid, p)
		}
		if onlyFailed {
			for _, p := range v.terminating {
				if ix, ok := podIndex(p); ok {
					taken[ix] = true
				}
			}
		}
		for _, u := range job.Status.UncountedTerminatedPods.Succeeded {
			if p := v.byUID[u]; p != nil {
				if ix, ok := podIndex(p); ok {
					taken[ix] = true
				}
			}
		}
		busy -= len(surplus)
		if extra := busy - parallelism; extra > 0 {
			// Keep the lowest indexes.
			sort.Slice(valid, func(i, j int) bool { a, _ := podIndex(valid[i]); b, _ := podIndex(valid[j]); return a < b })
			surplus = append(surplus, valid[len(valid)-min(extra, len(valid)):]...)
		}
		for ix := 0; ix < completions && busy+len(toCreate) < parallelism; ix++ {
			if !taken[ix] && !done[ix] {
				toCreate = append(toCreate, ix)
			}
		}
	} else {
		want := parallelism
		if job.Spec.Completions != nil {
			left := int(*job.Spec.Completions-job.Status.Succeeded) - len(job.Status.UncountedTerminatedPods.Succeeded)
			want = max(0, min(want, left))
		} else if job.Status.Succeeded > 0 || len(job.Status.UncountedTerminatedPods.Succeeded) > 0 {
			// A work queue with a success creates no more pods; those
			// running finish their work.
			want = min(busy, parallelism)
		}
		if busy > want {
			surplus = deletionOrder(v.active)[:min(busy-want, len(v.active))]
		}
		for i := busy; i < want; i++ {
			toCreate = append(toCreate, -1)
		}
	}
	if err := c.deletePods(ctx, key, job, surplus); err != nil {
		return 0, 0, err
	}
	if len(toCreate) == 0 {
		return -len(surplus), 0, nil
	}
	if wait := c.backoff(v, now); wait > 0 {
		return -len(surplus), wait, nil
	}
	toCreate = toCreate[:min(len(toCreate), maxBurst)]
	n, err := c.createPods(ctx, key, job, toCreate)
	return n - len(surplus), 0, err
}

// backoff is how long replacing failed pods must still wait: the base delay
// doubled for each failure since the last success, counted from the last.
func (c *Controller) backoff(v view, now time.Time) time.Duration {
	var lastSuccess, lastFailure time.Time
	for _, p := range v.byUID {
		if t := finishedAt(p); p.Status.Phase == corev1.PodSucceeded && t.After(lastSuccess) {
			lastSuccess = t
		}
	}
	failures := 0
	for _, p := range v.byUID {
		if t := finishedAt(p); p.Status.Phase == corev1.PodFailed && t.After(lastSuccess) {
			failures++
			if t.After(lastFailure) {
				lastFailure = t
			}
		}
	}
	if failures == 0 {
		return 0
	}
	delay := c.BackoffBase
	for i := 1; i < failures && delay < maxBackoff; i++ {
		delay *= 2
	}
	return lastFailure.Add(min(delay, maxBackoff)).Sub(now)
}

func finishedAt(p *corev1.Pod) time.Time {
	var t time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if term := cs.State.Terminated; term != nil && term.FinishedAt.After(t) {
			t = term.FinishedAt.Time
		}
	}
	if t.IsZero() {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.LastTransitionTime.After(t) {
				t = c.LastTransitionTime.Time
			}
		}
	}
	if t.IsZero() {
		t = p.CreationTimestamp.Time
	}
	return t
}

// deletionOrder ranks active pods for removal: unscheduled, then pending,
// then not ready, and the newest first.
func deletionOrder(pods []*corev1.Pod) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), pods...)
	rank := func(p *corev1.Pod) int {
		switch {
		case p.Spec.NodeName == "":
			return 0
		case p.Status.Phase == corev1.PodPending:
			return 1
		case !isReady(p):
			return 2
		}
		return 3
	}
	sort.SliceStable(out, func(i, j int) bool {
		if ra, rb := rank(out[i]), rank(out[j]); ra != rb {
			return ra < rb
		}
		return out[i].CreationTimestamp.After(out[j].CreationTimestamp.Time)
	})
	return out
}

func (c *Controller) deletePods(ctx context.Context, key string, job *batchv1.Job, pods []*corev1.Pod) error {
	if len(pods) == 0 {
		return nil
	}
	e := c.expect(key)
	for _, p := range pods {
		c.mu.Lock()
		e.deleted[p.UID] = true
		c.mu.Unlock()
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
		if err != nil && !apierrors.IsNotFound(err) {
			c.mu.Lock()
			delete(e.deleted, p.UID)
			c.mu.Unlock()
			return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		c.event(ctx, job, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: "+p.Name)
	}
	return nil
}

// createPods creates one pod per entry of indexes (-1: no index), a few at
// first and twice as many each round, as upstream, so that a template the
// API refuses costs one request.
func (c *Controller) createPods(ctx context.Context, key string, job *batchv1.Job, indexes []int) (int, error) {
	e := c.expect(key)
	created := 0
	for batch := 1; created < len(indexes); batch *= 2 {
		size := min(batch, len(indexes)-created)
		errs := make(chan error, size)
		var wg sync.WaitGroup
		for _, ix := range indexes[created : created+size] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := c.client.CoreV1().Pods(job.Namespace).Create(ctx, newPod(job, ix), metav1.CreateOptions{})
				if err == nil {
					c.mu.Lock()
					e.created[p.Name] = true
					c.mu.Unlock()
					c.event(ctx, job, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: "+p.Name)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		var first error
		for err := range errs {
			if err != nil && first == nil {
				first = err
			} else if err == nil {
				created++
			}
		}
		if first != nil {
			return created, fmt.Errorf("create pods: %w", first)
		}
	}
	return created, nil
}

// newPod makes a pod from the Job's template, owned by it and carrying the
// tracking finalizer; index >= 0 makes it the pod of that completion index.
func newPod(job *batchv1.Job, index int) *corev1.Pod {
	t := job.Spec.Template.DeepCopy()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: job.Name + "-", Namespace: job.Namespace,
			Labels: t.Labels, Annotations: t.Annotations, Finalizers: append(t.Finalizers, TrackingFinalizer),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: t.Spec,
	}
	if index < 0 {
		return p
	}
	ix := strconv.Itoa(index)
	p.GenerateName = job.Name + "-" + ix + "-"
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Annotations[CompletionIndexKey] = ix
	p.Labels[CompletionIndexKey] = ix
	if p.Spec.Hostname == "" {
		p.Spec.Hostname = job.Name + "-" + ix
	}
	env := corev1.EnvVar{Name: CompletionIndexEnvName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: completionIndexEnvRef}}}
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range list {
			list[i].Env = append(list[i].Env, env)
		}
	}
	return p
}

// podIndex is a pod's completion index from its annotation.
func podIndex(p *corev1.Pod) (int, bool) {
	v, ok := p.Annotations[CompletionIndexKey]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}
