package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

const batchManifest = `apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            navarch.io/sim-duration: 1s
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: busybox
---
apiVersion: batch/v1
kind: Job
metadata:
  name: three
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations:
        navarch.io/sim-duration: 500ms
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
---
apiVersion: batch/v1
kind: Job
metadata:
  name: brief
spec:
  ttlSecondsAfterFinished: 1
  template:
    metadata:
      annotations:
        navarch.io/sim-duration: 200ms
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
`

// TestJobAndCronJobOnHollowNodes runs a Job to completion on simulated
// nodes as kubectl shows it, and waits for a CronJob due every minute to
// start one; it runs in parallel with other tests since that takes up to
// a minute.
func TestJobAndCronJobOnHollowNodes(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	startSim(t, s, 3)
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)
	if r := s.kubectl(c, batchManifest, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply: %s", r)
	}

	out := s.must(t, c, "wait", "--for=condition=complete", "job/three", "--timeout=60s")
	if !strings.Contains(out, "job.batch/three condition met") {
		t.Errorf("wait: %s", out)
	}
	out = s.must(t, c, "get", "jobs", "three")
	if !regexp.MustCompile(`three\s+Complete\s+3/3\s+\d+s`).MatchString(out) {
		t.Errorf("get jobs:\n%s", out)
	}
	if got := s.must(t, c, "get", "pods", "-l", "job-name=three", "-o", "jsonpath={range .items[*]}{.status.phase} {end}"); strings.Count(got, "Succeeded") != 3 {
		t.Errorf("pods of the job: %s", got)
	}
	if out := s.must(t, c, "describe", "job", "three"); !strings.Contains(out, "SuccessfulCreate") || !strings.Contains(out, "Completed") ||
		!strings.Contains(out, "3 Succeeded / 0 Failed") {
		t.Errorf("describe job:\n%s", out)
	}
	// Deleting a Job takes its pods (their tracking finalizers released).
	s.must(t, c, "delete", "job", "three")
	// A Job with a TTL goes by itself once finished.
	eventually(t, 30*time.Second, func() error {
		out := s.must(t, c, "get", "pods,jobs", "-l", "job-name in (three,brief)", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		if r := s.kubectl(c, "", nil, "get", "job", "brief"); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
			return fmt.Errorf("job brief still there: %s", r)
		}
		return nil
	})

	// A Job made by hand from the CronJob's template runs too.
	s.must(t, c, "create", "job", "by-hand", "--from=cronjob/tick")
	s.must(t, c, "wait", "--for=condition=complete", "job/by-hand", "--timeout=60s")
	if owner := s.must(t, c, "get", "job", "by-hand", "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"); owner != "CronJob/tick" {
		t.Errorf("owner of by-hand: %q", owner)
	}

	// The schedule fires within the minute, and its Job completes.
	scheduled := regexp.MustCompile(`^tick-\d+$`)
	var name string
	eventually(t, 75*time.Second, func() error {
		out := s.must(t, c, "get", "jobs", "-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[0].name} {.metadata.annotations.batch\.kubernetes\.io/cronjob-scheduled-timestamp}{"\n"}{end}`)
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && scheduled.MatchString(f[0]) && f[1] == "tick" {
				name = f[0]
				return nil
			}
		}
		return fmt.Errorf("no scheduled job yet:\n%s", out)
	})
	s.must(t, c, "wait", "--for=condition=complete", "job/"+name, "--timeout=60s")
	eventually(t, 30*time.Second, func() error {
		out := s.must(t, c, "get", "cronjob", "tick", "-o", "jsonpath={.status.lastScheduleTime} {.status.lastSuccessfulTime}")
		if len(strings.Fields(out)) != 2 {
			return fmt.Errorf("cronjob status: %q", out)
		}
		return nil
	})
	if out := s.must(t, c, "get", "cronjobs"); !regexp.MustCompile(`tick\s+\* \* \* \* \*\s+<none>\s+False\s+\d+\s+\d+s`).MatchString(out) {
		t.Errorf("get cronjobs:\n%s", out)
	}
}
