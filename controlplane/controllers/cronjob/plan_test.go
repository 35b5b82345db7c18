package cronjob

import (
	"fmt"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry/batch"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func cronJob(schedule string, created time.Time) *batchv1.CronJob {
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "default", UID: "cj-uid", CreationTimestamp: metav1.Time{Time: created}},
		Spec: batchv1.CronJobSpec{Schedule: schedule, TimeZone: ptr.To("UTC"), ConcurrencyPolicy: batchv1.AllowConcurrent, Suspend: ptr.To(false),
			SuccessfulJobsHistoryLimit: ptr.To[int32](3), FailedJobsHistoryLimit: ptr.To[int32](1),
			JobTemplate: batchv1.JobTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "n"}, Annotations: map[string]string{"a": "b"}}}},
	}
}

func job(name string, uid types.UID, cond batchv1.JobConditionType, start, done time.Time) *batchv1.Job {
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid}}
	if !start.IsZero() {
		j.Status.StartTime = &metav1.Time{Time: start}
	}
	if cond != "" {
		j.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue}}
	}
	if cond == batchv1.JobComplete {
		j.Status.CompletionTime = &metav1.Time{Time: done}
	}
	return j
}

func ref(j *batchv1.Job) corev1.ObjectReference {
	return corev1.ObjectReference{Kind: "Job", Namespace: j.Namespace, Name: j.Name, UID: j.UID}
}

func wantCreate(t *testing.T, p *step, scheduled time.Time) {
	t.Helper()
	if p.create == nil {
		t.Fatalf("no job created (events %v)", p.events)
	}
	if want := fmt.Sprintf("nightly-%d", scheduled.Unix()/60); p.create.Name != want {
		t.Errorf("job name %s, want %s", p.create.Name, want)
	}
	if p.status.LastScheduleTime == nil || !p.status.LastScheduleTime.Time.Equal(scheduled) {
		t.Errorf("lastScheduleTime %v, want %s", p.status.LastScheduleTime, scheduled)
	}
}

func TestPlanSchedules(t *testing.T) {
	created := at(t, "2026-03-02T10:01:00Z")
	cases := []struct {
		name      string
		mod       func(*batchv1.CronJob)
		now       string
		want      string // the schedule time of the Job made, "" for none
		requeue   time.Duration
		wantEvent bool
	}{
		{name: "not yet due", now: "2026-03-02T10:04:00Z", requeue: time.Minute + nextScheduleDelta},
		{name: "due", now: "2026-03-02T10:05:30Z", want: "2026-03-02T10:05:00Z", requeue: 4*time.Minute + 30*time.Second + nextScheduleDelta},
		{name: "already run", mod: func(cj *batchv1.CronJob) {
			cj.Status.LastScheduleTime = &metav1.Time{Time: at(t, "2026-03-02T10:05:00Z")}
		},
			now: "2026-03-02T10:06:00Z", requeue: 4*time.Minute + nextScheduleDelta},
		{name: "missed starts run the latest once", now: "2026-03-02T12:07:00Z", want: "2026-03-02T12:05:00Z", requeue: 3*time.Minute + nextScheduleDelta},
		{name: "past the starting deadline", mod: func(cj *batchv1.CronJob) { cj.Spec.StartingDeadlineSeconds = ptr.To[int64](60) },
			now: "2026-03-02T10:07:00Z", requeue: 3*time.Minute + nextScheduleDelta},
		{name: "within the starting deadline", mod: func(cj *batchv1.CronJob) { cj.Spec.StartingDeadlineSeconds = ptr.To[int64](200) },
			now: "2026-03-02T10:07:00Z", want: "2026-03-02T10:05:00Z", requeue: 3*time.Minute + nextScheduleDelta},
		{name: "suspended", mod: func(cj *batchv1.CronJob) { cj.Spec.Suspend = ptr.To(true) }, now: "2026-03-02T10:05:30Z"},
		{name: "TZ in the schedule is refused", mod: func(cj *batchv1.CronJob) { cj.Spec.Schedule = "TZ=UTC */5 * * * *" }, now: "2026-03-02T10:05:30Z", wantEvent: true},
		{name: "unknown time zone", mod: func(cj *batchv1.CronJob) { cj.Spec.TimeZone = ptr.To("Mars/Olympus") }, now: "2026-03-02T10:05:30Z", wantEvent: true},
		{name: "hourly", mod: func(cj *batchv1.CronJob) { cj.Spec.Schedule = "@hourly" }, now: "2026-03-02T11:00:01Z", want: "2026-03-02T11:00:00Z",
			requeue: time.Hour - time.Second + nextScheduleDelta},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cj := cronJob("*/5 * * * *", created)
			if c.mod != nil {
				c.mod(cj)
			}
			p := plan(cj, nil, at(t, c.now))
			if c.want == "" {
				if p.create != nil {
					t.Errorf("created %s", p.create.Name)
				}
			} else {
				wantCreate(t, p, at(t, c.want))
			}
			if p.requeueAfter != c.requeue {
				t.Errorf("requeue after %s, want %s", p.requeueAfter, c.requeue)
			}
			if (len(p.events) > 0) != c.wantEvent {
				t.Errorf("events %v", p.events)
			}
		})
	}
}

func TestPlanMakesJobFromTemplate(t *testing.T) {
	cj := cronJob("0 9 * * *", at(t, "2026-02-28T23:00:00Z"))
	cj.Spec.TimeZone = ptr.To("Asia/Tokyo")
	// 09:00 in Tokyo is midnight UTC.
	p := plan(cj, nil, at(t, "2026-03-01T00:30:00Z"))
	wantCreate(t, p, at(t, "2026-03-01T00:00:00Z"))
	j := p.create
	if got := j.Annotations[ScheduledTimestampAnnotation]; got != "2026-03-01T09:00:00+09:00" {
		t.Errorf("scheduled timestamp %q", got)
	}
	if j.Annotations["a"] != "b" || j.Labels["app"] != "n" || j.Namespace != "default" {
		t.Errorf("job metadata %+v", j.ObjectMeta)
	}
	if r := metav1.GetControllerOf(j); r == nil || r.Kind != "CronJob" || r.UID != "cj-uid" || !ptr.Deref(r.BlockOwnerDeletion, false) {
		t.Errorf("owner %+v", r)
	}
	if cj.Spec.JobTemplate.Annotations[ScheduledTimestampAnnotation] != "" {
		t.Errorf("the template was changed")
	}
	// The next run is 09:00 Tokyo the next day.
	if p.requeueAfter != 23*time.Hour+30*time.Minute+nextScheduleDelta {
		t.Errorf("requeue after %s", p.requeueAfter)
	}
}

func TestPlanConcurrency(t *testing.T) {
	created := at(t, "2026-03-02T10:01:00Z")
	running := job("nightly-1", "j1", "", created, time.Time{})
	for _, c := range []struct {
		policy      batchv1.ConcurrencyPolicy
		wantCreate  bool
		wantReplace int
		wantActive  int // before the new Job is added
	}{
		{batchv1.AllowConcurrent, true, 0, 1},
		{batchv1.ForbidConcurrent, false, 0, 1},
		{batchv1.ReplaceConcurrent, true, 1, 0},
	} {
		cj := cronJob("*/5 * * * *", created)
		cj.Spec.ConcurrencyPolicy = c.policy
		cj.Status.Active = []corev1.ObjectReference{ref(running)}
		p := plan(cj, []*batchv1.Job{running}, at(t, "2026-03-02T10:05:10Z"))
		if (p.create != nil) != c.wantCreate || len(p.replace) != c.wantReplace || len(p.status.Active) != c.wantActive {
			t.Errorf("%s: create %v, replace %v, active %v (events %v)", c.policy, p.create != nil, p.replace, p.status.Active, p.events)
		}
		if c.policy == batchv1.ForbidConcurrent && p.status.LastScheduleTime != nil {
			t.Errorf("Forbid recorded a schedule time it did not run")
		}
	}
}

func TestPlanStatusAndHistory(t *testing.T) {
	created := at(t, "2026-03-02T10:01:00Z")
	cj := cronJob("0 0 1 1 *", created) // not due: only status and history matter
	var jobs []*batchv1.Job
	for i := 0; i < 5; i++ {
		start := created.Add(time.Duration(i) * time.Minute)
		jobs = append(jobs, job(fmt.Sprintf("ok-%d", i), types.UID(fmt.Sprintf("ok-%d", i)), batchv1.JobComplete, start, start.Add(30*time.Second)))
	}
	jobs = append(jobs, job("bad-0", "bad-0", batchv1.JobFailed, created, time.Time{}), job("bad-1", "bad-1", batchv1.JobFailed, created.Add(time.Minute), time.Time{}))
	running := job("run", "run", "", created, time.Time{})
	jobs = append(jobs, running)
	gone := corev1.ObjectReference{Kind: "Job", Namespace: "default", Name: "gone", UID: "gone"}
	cj.Status.Active = []corev1.ObjectReference{ref(jobs[4]), ref(running), gone}

	p := plan(cj, jobs, created.Add(time.Hour))
	if len(p.events) != 1 || p.events[0].message != "Saw completed job: ok-4, condition: Complete" {
		t.Errorf("events %+v", p.events)
	}
	if len(p.status.Active) != 1 || p.status.Active[0].UID != "run" {
		t.Errorf("active %+v, want only the running job", p.status.Active)
	}
	if lst := p.status.LastSuccessfulTime; lst == nil || !lst.Time.Equal(created.Add(4*time.Minute+30*time.Second)) {
		t.Errorf("lastSuccessfulTime %v", lst)
	}
	var names []string
	for _, j := range p.expired {
		names = append(names, j.Name)
	}
	if fmt.Sprint(names) != "[ok-0 ok-1 bad-0]" {
		t.Errorf("expired %v, want the two oldest successes and the oldest failure", names)
	}
}

func TestMostRecent(t *testing.T) {
	sched := func(s string) *batch.Schedule {
		v, err := batch.ParseSchedule(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Weekdays at 9: from a Monday's run to the next Sunday, Friday is latest.
	cj := cronJob("0 9 * * 1-5", at(t, "2026-01-01T00:00:00Z"))
	st := &batchv1.CronJobStatus{LastScheduleTime: &metav1.Time{Time: at(t, "2026-03-02T09:00:00Z")}}
	_, recent, _, err := mostRecent(cj, st, at(t, "2026-03-08T10:00:00Z"), sched(cj.Spec.Schedule), true)
	if err != nil || recent == nil || !recent.Equal(at(t, "2026-03-06T09:00:00Z")) {
		t.Errorf("weekday schedule: %v %v", recent, err)
	}
	// Two days of minutes missed: many, but the latest still runs.
	cj = cronJob("* * * * *", at(t, "2026-03-01T00:00:00Z"))
	_, recent, missed, err := mostRecent(cj, &cj.Status, at(t, "2026-03-03T00:00:30Z"), sched(cj.Spec.Schedule), true)
	if err != nil || recent == nil || !recent.Equal(at(t, "2026-03-03T00:00:00Z")) || missed <= tooManyMissed {
		t.Errorf("every minute: %v %d %v", recent, missed, err)
	}
	p := plan(cj, nil, at(t, "2026-03-03T00:00:30Z"))
	wantCreate(t, p, at(t, "2026-03-03T00:00:00Z"))
	if len(p.events) != 1 || p.events[0].reason != "TooManyMissedTimes" || p.events[0].typ != corev1.EventTypeWarning {
		t.Errorf("events %+v, want one TooManyMissedTimes warning", p.events)
	}
	// A deadline narrows the search to what can still start.
	cj.Spec.StartingDeadlineSeconds = ptr.To[int64](10)
	_, recent, missed, _ = mostRecent(cj, &cj.Status, at(t, "2026-03-03T00:00:30Z"), sched(cj.Spec.Schedule), true)
	if recent != nil || missed != 0 {
		t.Errorf("with a 10 s deadline: %v %d", recent, missed)
	}
	// A schedule that never fires is an error, not a hang.
	cj = cronJob("0 0 30 2 *", at(t, "2026-03-01T00:00:00Z"))
	if _, _, _, err := mostRecent(cj, &cj.Status, at(t, "2026-03-03T00:00:30Z"), sched(cj.Spec.Schedule), true); err == nil {
		t.Errorf("30 February: no error")
	}
}
