package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const stsManifest = `apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports:
  - {name: http, port: 80}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: example.com/nginx:1
        ports:
        - {name: http, containerPort: 80}
        volumeMounts:
        - {name: data, mountPath: /usr/share/nginx/html}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
`

// stsCapture is a running `kubectl get pods -w` whose lines are kept.
type stsCapture struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (w *stsCapture) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

// lines returns the complete lines so far, each "TYPE NAME PHASE READY DELETING".
func (w *stsCapture) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.out.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// stsWatchPods starts `kubectl get pods -w --output-watch-events` for the
// web pods, as a user watching them would, until the test ends.
func stsWatchPods(t *testing.T, s *server, c client) *stsCapture {
	ctx, cancel := context.WithCancel(context.Background())
	args := append(c.argv[1:], "get", "pods", "-l", "app in (web,stswatch)", "-w", "--output-watch-events", "-o",
		`jsonpath={.type} {.object.metadata.name} {.object.status.phase} ready={.object.status.conditions[?(@.type=="Ready")].status} deleting={.object.metadata.deletionTimestamp}{"\n"}`)
	cmd := exec.CommandContext(ctx, c.argv[0], args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	w := &stsCapture{}
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("kubectl get pods -w:\n%s\nstderr:\n%s", strings.Join(w.lines(), "\n"), stderr.String())
		}
	})
	return w
}

// stsIndex is the index of the first line for pod name containing all of
// parts, or -1.
func stsIndex(lines []string, name string, parts ...string) int {
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[1] != name {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return i
		}
	}
	return -1
}

// TestStatefulSetOnHollowNodes drives a StatefulSet with kubectl on
// simulated nodes: ordered creation, claims per pod, rollout status,
// history and undo, and ordered scale-down.
func TestStatefulSetOnHollowNodes(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 3)
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)
	// The watch must be running before the first pod exists: a pod it
	// shows proves it is.
	watch := stsWatchPods(t, s, c)
	s.must(t, c, "run", "stswatch", "--image=busybox", "--labels=app=stswatch")
	eventually(t, 30*time.Second, func() error {
		if stsIndex(watch.lines(), "stswatch") < 0 {
			return fmt.Errorf("watch not started")
		}
		return nil
	})
	s.must(t, c, "delete", "pod", "stswatch", "--wait=false")

	if r := s.kubectl(c, stsManifest, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply: %s", r)
	}
	rollout := func() {
		t.Helper()
		out := s.must(t, c, "rollout", "status", "statefulset/web", "--timeout=60s")
		if !strings.Contains(out, "roll out complete") && !strings.Contains(out, "rolling update complete") {
			t.Fatalf("rollout status: %s", out)
		}
	}
	rollout()

	// web-0, web-1, web-2 were created in order, each after the one before
	// it was Running and Ready.
	var lines []string
	eventually(t, 10*time.Second, func() error {
		lines = watch.lines()
		if stsIndex(lines, "web-2", "Running", "ready=True") < 0 {
			return fmt.Errorf("web-2 not seen ready in the watch:\n%s", strings.Join(lines, "\n"))
		}
		return nil
	})
	for i := 1; i < 3; i++ {
		prev, cur := fmt.Sprintf("web-%d", i-1), fmt.Sprintf("web-%d", i)
		readyAt, addedAt := stsIndex(lines, prev, "Running", "ready=True"), stsIndex(lines, cur, "ADDED")
		if readyAt < 0 || addedAt < 0 || addedAt < readyAt {
			t.Errorf("%s added at line %d, %s ready at line %d: want it added after", cur, addedAt, prev, readyAt)
		}
	}
	// The creation timestamps agree (to the second they are kept at).
	out := s.must(t, c, "get", "pods", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.creationTimestamp} {.spec.hostname} {.spec.subdomain}{"\n"}{end}`)
	created := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[2] != f[0] || f[3] != "web" {
			t.Errorf("pod line %q: want NAME TIME NAME web", l)
			continue
		}
		created[f[0]] = f[1]
	}
	if len(created) != 3 || created["web-0"] > created["web-1"] || created["web-1"] > created["web-2"] {
		t.Errorf("creation timestamps out of order: %v", created)
	}

	// One claim per pod, listed by kubectl get pvc.
	out = s.must(t, c, "get", "pvc")
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if strings.Join(header[:7], " ") != "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS" {
		t.Errorf("kubectl get pvc header: %q", header)
	}
	for i := 0; i < 3; i++ {
		if !strings.Contains(out, fmt.Sprintf("data-web-%d ", i)) {
			t.Errorf("claim data-web-%d missing from:\n%s", i, out)
		}
	}
	if n := strings.Count(out, "Pending"); n != 3 {
		t.Errorf("%d Pending claims in:\n%s", n, out)
	}
	if claim := s.must(t, c, "get", "pod", "web-1", "-o", `jsonpath={.spec.volumes[?(@.name=="data")].persistentVolumeClaim.claimName}`); claim != "data-web-1" {
		t.Errorf("web-1 mounts claim %q, want data-web-1", claim)
	}

	// An update rolls through, is in history, and undo brings it back.
	images := func(want string) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			out := s.must(t, c, "get", "pods", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}`)
			f := strings.Fields(out)
			sort.Strings(f)
			if strings.Join(f, " ") != fmt.Sprintf("web-0=%s web-1=%s web-2=%s", want, want, want) {
				return fmt.Errorf("pods: %s", out)
			}
			return nil
		})
	}
	s.must(t, c, "set", "image", "statefulset/web", "nginx=example.com/nginx:2")
	rollout()
	images("example.com/nginx:2")
	out = s.must(t, c, "rollout", "history", "statefulset/web")
	if !strings.Contains(out, "REVISION") || !strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") {
		t.Errorf("rollout history:\n%s", out)
	}
	if out := s.must(t, c, "rollout", "history", "statefulset/web", "--revision=1"); !strings.Contains(out, "example.com/nginx:1") {
		t.Errorf("rollout history --revision=1:\n%s", out)
	}
	if out := s.must(t, c, "rollout", "undo", "statefulset/web"); !strings.Contains(out, "rolled back") {
		t.Errorf("rollout undo: %s", out)
	}
	rollout()
	images("example.com/nginx:1")
	if out := s.must(t, c, "get", "controllerrevisions", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.revision} {end}`); strings.Join(sortedFields(out), " ") != "2 3" {
		t.Errorf("revisions after undo: %q, want 2 3 (the first one renumbered)", out)
	}

	// Scale down removes web-2, and web-1 only once web-2 is gone.
	mark := len(watch.lines())
	s.must(t, c, "scale", "statefulset/web", "--replicas=1")
	eventually(t, 30*time.Second, func() error {
		out := s.must(t, c, "get", "pods", "-l", "app=web", "-o", "name")
		if strings.TrimSpace(out) != "pod/web-0" {
			return fmt.Errorf("pods: %s", out)
		}
		return nil
	})
	rollout()
	eventually(t, 10*time.Second, func() error {
		lines = watch.lines()[mark:]
		if stsIndex(lines, "web-1", "DELETED") < 0 {
			return fmt.Errorf("web-1 deletion not seen in the watch")
		}
		return nil
	})
	// deleting= is followed by the deletion timestamp once there is one.
	web2Gone, web1Deleting := stsIndex(lines, "web-2", "DELETED"), stsIndex(lines, "web-1", "deleting=2")
	if web2Gone < 0 || web1Deleting < 0 || web1Deleting < web2Gone {
		t.Errorf("web-1 deleted at line %d, web-2 gone at line %d: want web-2 gone first:\n%s", web1Deleting, web2Gone, strings.Join(lines, "\n"))
	}
	if out := s.must(t, c, "get", "statefulset", "web", "--no-headers"); !strings.HasPrefix(out, "web ") || !strings.Contains(out, " 1/1 ") {
		t.Errorf("kubectl get statefulset: %q", out)
	}
	// The claims stay (whenScaled: Retain), ready for a scale-up.
	if out := s.must(t, c, "get", "pvc", "-o", "name"); strings.Count(out, "persistentvolumeclaim/data-web-") != 3 {
		t.Errorf("claims after scale-down: %s", out)
	}

	// A set deleted with --cascade=orphan and made again takes back its
	// pod and its history instead of starting over.
	podUID := s.must(t, c, "get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}")
	s.must(t, c, "delete", "statefulset", "web", "--cascade=orphan")
	eventually(t, 30*time.Second, func() error {
		if out := s.must(t, c, "get", "pod", "web-0", "-o", "jsonpath={.metadata.ownerReferences}"); out != "" {
			return fmt.Errorf("web-0 still owned: %s", out)
		}
		return nil
	})
	manifest := strings.Replace(stsManifest, "replicas: 3", "replicas: 1", 1)
	if r := s.kubectl(c, manifest, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply again: %s", r)
	}
	setUID := s.must(t, c, "get", "statefulset", "web", "-o", "jsonpath={.metadata.uid}")
	eventually(t, 30*time.Second, func() error {
		owner := s.must(t, c, "get", "pod", "web-0", "-o", "jsonpath={.metadata.uid} {.metadata.ownerReferences[0].uid}")
		revs := s.must(t, c, "get", "controllerrevisions", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.ownerReferences[0].uid} {end}")
		if owner != podUID+" "+setUID || strings.Count(revs, setUID) != 2 {
			return fmt.Errorf("web-0 (uid owner) %q, want %q; revision owners %q", owner, podUID+" "+setUID, revs)
		}
		return nil
	})
	if n := s.must(t, c, "get", "statefulset", "web", "-o", "jsonpath={.status.collisionCount}"); n != "0" {
		t.Errorf("collision count %q after taking back the history, want 0", n)
	}
}

func sortedFields(s string) []string {
	f := strings.Fields(s)
	sort.Strings(f)
	return f
}
