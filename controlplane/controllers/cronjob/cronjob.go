// Package cronjob creates the Jobs of batch/v1 CronJobs at the times of
// their cron schedules (in spec.timeZone, else the server's local zone),
// honouring concurrencyPolicy, suspend and startingDeadlineSeconds, keeps
// the finished Jobs' history within its limits and reports status.active,
// lastScheduleTime and lastSuccessfulTime. What one sync does is decided by
// plan, a function of the CronJob, its Jobs and the time, so that the
// schedule logic is tested without waiting; the controller then carries the
// plan out and requeues the CronJob for its next schedule time.
package cronjob

import (
	"context"
	"fmt"
	"sort"
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
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
	"github.com/navarch/navarch/controlplane/registry/batch"
)

// ScheduledTimestampAnnotation records, on a Job, the schedule time it was
// made for (RFC 3339, in the CronJob's time zone).
const ScheduledTimestampAnnotation = "batch.kubernetes.io/cronjob-scheduled-timestamp"

// nextScheduleDelta is how long after a schedule time the CronJob is synced,
// so that the time has surely come by the clock.
const nextScheduleDelta = 100 * time.Millisecond

// tooManyMissed is the number of missed start times past which upstream
// warns of clock skew or a missing startingDeadlineSeconds.
const tooManyMissed = 100

// Controller is the CronJob controller.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	cronJobs batchlisters.CronJobLister
	jobs     batchlisters.JobLister
	// Clock tells the time; tests may replace it before Run.
	Clock clock.PassiveClock
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, Clock: clock.RealClock{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "cronjob"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	cjInf, jobInf := c.factory.Batch().V1().CronJobs(), c.factory.Batch().V1().Jobs()
	c.cronJobs, c.jobs = cjInf.Lister(), jobInf.Lister()
	enqueue := func(obj interface{}) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	cjInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj interface{}) { enqueue(obj) }})
	jobEvent := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if j, ok := obj.(*batchv1.Job); ok {
			if ref := metav1.GetControllerOf(j); ref != nil && ref.Kind == "CronJob" {
				c.queue.Add(j.Namespace + "/" + ref.Name)
			}
		}
	}
	jobInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: jobEvent, UpdateFunc: func(_, obj interface{}) { jobEvent(obj) }, DeleteFunc: jobEvent})
	c.factory.Start(ctx.Done())
	return workloop.Run(ctx, "cronjob", c.queue, 2, c.sync, cjInf.Informer().HasSynced, jobInf.Informer().HasSynced)
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cj, err := c.cronJobs.CronJobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	all, err := c.jobs.Jobs(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var jobs []*batchv1.Job
	seen := map[types.UID]bool{}
	for _, j := range all {
		if ref := metav1.GetControllerOf(j); ref != nil && ref.UID == cj.UID {
			jobs = append(jobs, j)
			seen[j.UID] = true
		}
	}
	// A Job in status.active the cache does not show may just be new: ask.
	for _, ref := range cj.Status.Active {
		if seen[ref.UID] {
			continue
		}
		j, err := c.client.BatchV1().Jobs(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("cronjob %s/%s: job %s: %w", ns, name, ref.Name, err)
		}
		if err == nil && j.UID == ref.UID {
			jobs = append(jobs, j)
		}
	}
	p := plan(cj, jobs, c.Clock.Now())
	for _, e := range p.events {
		c.event(ctx, cj, e)
	}
	if err := c.carryOut(ctx, cj, p); err != nil {
		return fmt.Errorf("cronjob %s/%s: %w", ns, name, err)
	}
	if p.requeueAfter > 0 {
		c.queue.AddAfter(key, p.requeueAfter)
	}
	return nil
}

func (c *Controller) carryOut(ctx context.Context, cj *batchv1.CronJob, p *step) error {
	jobs := c.client.BatchV1().Jobs(cj.Namespace)
	background := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	for _, ref := range p.replace {
		if err := jobs.Delete(ctx, ref.Name, background); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace job %s: %w", ref.Name, err)
		}
		c.event(ctx, cj, event{corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job " + ref.Name})
	}
	st := p.status
	if p.create != nil {
		created, err := jobs.Create(ctx, p.create, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Made by an earlier sync whose status update was lost.
			if created, err = jobs.Get(ctx, p.create.Name, metav1.GetOptions{}); err == nil {
				if ref := metav1.GetControllerOf(created); ref == nil || ref.UID != cj.UID {
					return fmt.Errorf("job %s exists and is not this cronjob's", p.create.Name)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("create job %s: %w", p.create.Name, err)
		}
		c.event(ctx, cj, event{corev1.EventTypeNormal, "SuccessfulCreate", "Created job " + created.Name})
		if !finished(created) && !inActive(st.Active, created.UID) {
			st.Active = append(st.Active, corev1.ObjectReference{APIVersion: "batch/v1", Kind: "Job", Namespace: created.Namespace,
				Name: created.Name, UID: created.UID, ResourceVersion: created.ResourceVersion})
		}
	}
	if !apiequality.Semantic.DeepEqual(cj.Status, st) {
		cp := cj.DeepCopy()
		cp.Status = st
		if _, err := c.client.BatchV1().CronJobs(cj.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	for _, j := range p.expired {
		err := jobs.Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
			Preconditions: metav1.NewUIDPreconditions(string(j.UID))})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete old job %s: %w", j.Name, err)
		}
		c.event(ctx, cj, event{corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job " + j.Name})
	}
	return nil
}

// step is what one sync of a CronJob does.
type step struct {
	status       batchv1.CronJobStatus // without the Job create adds
	create       *batchv1.Job
	replace      []corev1.ObjectReference // active Jobs to delete first (Replace)
	expired      []*batchv1.Job           // finished Jobs beyond the history limits
	requeueAfter time.Duration            // when to look again; 0: on the next change
	events       []event                  // what to tell `kubectl describe`
}

// event is one Event to record on the CronJob.
type event struct{ typ, reason, message string }

func (p *step) warn(reason, format string, args ...interface{}) {
	p.events = append(p.events, event{corev1.EventTypeWarning, reason, fmt.Sprintf(format, args...)})
}

func (p *step) tell(reason, format string, args ...interface{}) {
	p.events = append(p.events, event{corev1.EventTypeNormal, reason, fmt.Sprintf(format, args...)})
}

// plan decides what to do for cj, whose Jobs are jobs, at now.
func plan(cj *batchv1.CronJob, jobs []*batchv1.Job, now time.Time) *step {
	p := &step{status: *cj.Status.DeepCopy()}
	st := &p.status

	// Bring the status up to date with the Jobs.
	present := map[types.UID]bool{}
	for _, j := range jobs {
		present[j.UID] = true
		if !finished(j) {
			continue
		}
		if inActive(st.Active, j.UID) {
			cond := batchv1.JobComplete
			if condition(j, batchv1.JobFailed) {
				cond = batchv1.JobFailed
			}
			p.tell("SawCompletedJob", "Saw completed job: %s, condition: %s", j.Name, cond)
			st.Active = removeRef(st.Active, j.UID)
		}
		if ct := j.Status.CompletionTime; ct != nil && (st.LastSuccessfulTime == nil || ct.After(st.LastSuccessfulTime.Time)) {
			st.LastSuccessfulTime = ct.DeepCopy()
		}
	}
	var active []corev1.ObjectReference
	for _, ref := range st.Active {
		if present[ref.UID] {
			active = append(active, ref)
		}
	}
	st.Active = active
	if cj.DeletionTimestamp != nil {
		return p
	}
	p.expired = expired(cj, jobs)

	if ptr.Deref(cj.Spec.Suspend, false) {
		return p
	}
	loc := time.Local
	if tz := cj.Spec.TimeZone; tz != nil {
		var err error
		if loc, err = time.LoadLocation(*tz); err != nil {
			p.warn("UnknownTimeZone", "invalid timeZone: %q: %s", *tz, err)
			return p
		}
	}
	sched, err := batch.ParseSchedule(cj.Spec.Schedule)
	if err != nil {
		p.warn("UnparseableSchedule", "unparseable schedule: %q : %s", cj.Spec.Schedule, err)
		return p
	}
	now = now.In(loc)
	_, due, missed, err := mostRecent(cj, st, now, sched, true)
	if err != nil {
		p.warn("InvalidSchedule", "invalid schedule: %s : %s", cj.Spec.Schedule, err)
		return p
	}
	defer func() { p.requeueAfter = nextDelay(cj, st, now, sched) }()
	if due == nil {
		return p
	}
	if missed > tooManyMissed {
		p.warn("TooManyMissedTimes", "too many missed start times: %d. Set or decrease .spec.startingDeadlineSeconds or check clock skew", missed)
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil && due.Add(time.Duration(*d)*time.Second).Before(now) {
		p.warn("MissedSchedule", "Missed scheduled time to start a job: %s", due.UTC().Format(time.RFC1123Z))
		return p
	}
	name := jobName(cj, *due)
	if (st.LastScheduleTime != nil && st.LastScheduleTime.Equal(&metav1.Time{Time: *due})) || activeNamed(st.Active, name) {
		return p // this one is done already
	}
	switch cj.Spec.ConcurrencyPolicy {
	case batchv1.ForbidConcurrent:
		if len(st.Active) > 0 {
			p.tell("JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
			return p
		}
	case batchv1.ReplaceConcurrent:
		p.replace, st.Active = st.Active, nil
	}
	p.create = jobFor(cj, *due, loc)
	st.LastScheduleTime = &metav1.Time{Time: *due}
	return p
}

// mostRecent finds the latest schedule time at or before now that is
// after the last one run (or the CronJob's creation) and, with
// withDeadline, within startingDeadlineSeconds of now. It returns where the
// search began, that time (nil if none), and roughly how many were missed.
func mostRecent(cj *batchv1.CronJob, st *batchv1.CronJobStatus, now time.Time, sched *batch.Schedule, withDeadline bool) (time.Time, *time.Time, int64, error) {
	earliest := cj.CreationTimestamp.Time
	if st.LastScheduleTime != nil {
		earliest = st.LastScheduleTime.Time
	}
	if d := cj.Spec.StartingDeadlineSeconds; withDeadline && d != nil {
		if limit := now.Add(-time.Duration(*d) * time.Second); limit.After(earliest) {
			earliest = limit
		}
	}
	earliest = earliest.In(now.Location())
	t1 := sched.Next(earliest)
	if t1.IsZero() {
		return earliest, nil, 0, fmt.Errorf("schedule %q has no time after %s", cj.Spec.Schedule, earliest.Format(time.RFC3339))
	}
	if now.Before(t1) {
		return earliest, nil, 0, nil
	}
	t2 := sched.Next(t1)
	if t2.IsZero() || now.Before(t2) {
		return earliest, &t1, 1, nil
	}
	interval := t2.Sub(t1).Round(time.Second)
	if interval < time.Second {
		return earliest, nil, 0, fmt.Errorf("time difference between two schedules is less than 1 second")
	}
	missed := int64(now.Sub(t1)/interval) + 1
	// Jump whole intervals to just before now, then let the schedule step,
	// which also places irregular schedules right.
	recent := time.Time{}
	for t := sched.Next(t1.Add(time.Duration(missed-2) * interval)); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		recent = t
	}
	if recent.IsZero() {
		// An irregular schedule whose gap the jump overshot: walk it.
		for t := t1; !t.IsZero() && !t.After(now); t = sched.Next(t) {
			recent = t
		}
	}
	return earliest, &recent, missed, nil
}

// nextDelay is how long until the schedule time after the last one.
func nextDelay(cj *batchv1.CronJob, st *batchv1.CronJobStatus, now time.Time, sched *batch.Schedule) time.Duration {
	earliest, recent, _, err := mostRecent(cj, st, now, sched, false)
	if err != nil {
		return 0
	}
	from := earliest
	if recent != nil {
		from = *recent
	}
	next := sched.Next(from)
	if next.IsZero() {
		return 0
	}
	return max(next.Add(nextScheduleDelta).Sub(now), nextScheduleDelta)
}

// jobName is upstream's: the CronJob's name and the schedule time in
// minutes since the epoch, the same for every sync that makes it.
func jobName(cj *batchv1.CronJob, at time.Time) string {
	return fmt.Sprintf("%s-%d", cj.Name, at.Unix()/60)
}

func jobFor(cj *batchv1.CronJob, at time.Time, loc *time.Location) *batchv1.Job {
	t := cj.Spec.JobTemplate.DeepCopy()
	annotations := map[string]string{}
	for k, v := range t.Annotations {
		annotations[k] = v
	}
	annotations[ScheduledTimestampAnnotation] = at.In(loc).Format(time.RFC3339)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: jobName(cj, at), Namespace: cj.Namespace, Labels: t.Labels, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: t.Spec,
	}
}

// expired lists the oldest finished Jobs beyond the history limits.
func expired(cj *batchv1.CronJob, jobs []*batchv1.Job) []*batchv1.Job {
	var succeeded, failed []*batchv1.Job
	for _, j := range jobs {
		switch {
		case condition(j, batchv1.JobComplete):
			succeeded = append(succeeded, j)
		case condition(j, batchv1.JobFailed):
			failed = append(failed, j)
		}
	}
	var out []*batchv1.Job
	for _, g := range []struct {
		jobs  []*batchv1.Job
		limit *int32
	}{{succeeded, cj.Spec.SuccessfulJobsHistoryLimit}, {failed, cj.Spec.FailedJobsHistoryLimit}} {
		if g.limit == nil || len(g.jobs) <= int(*g.limit) {
			continue
		}
		started := func(j *batchv1.Job) time.Time {
			if j.Status.StartTime != nil {
				return j.Status.StartTime.Time
			}
			return j.CreationTimestamp.Time
		}
		sort.SliceStable(g.jobs, func(a, b int) bool { return started(g.jobs[a]).Before(started(g.jobs[b])) })
		out = append(out, g.jobs[:len(g.jobs)-int(*g.limit)]...)
	}
	return out
}

func condition(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func finished(j *batchv1.Job) bool {
	return condition(j, batchv1.JobComplete) || condition(j, batchv1.JobFailed)
}

func removeRef(refs []corev1.ObjectReference, uid types.UID) []corev1.ObjectReference {
	var out []corev1.ObjectReference
	for _, r := range refs {
		if r.UID != uid {
			out = append(out, r)
		}
	}
	return out
}

func inActive(refs []corev1.ObjectReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid {
			return true
		}
	}
	return false
}

func activeNamed(refs []corev1.ObjectReference, name string) bool {
	for _, r := range refs {
		if r.Name == name {
			return true
		}
	}
	return false
}
