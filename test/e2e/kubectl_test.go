package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// manifest is the multi-document manifest the scenario applies.
func manifest(ns, image string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: %[1]s
  labels: {app: web, tier: config}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: %[1]s
type: Opaque
data:
  password: aHVudGVyMg==
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: %[1]s
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: %[2]s
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: %[1]s
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
  namespace: %[1]s
spec:
  replicas: 1
  selector: {app: legacy}
  template:
    metadata:
      labels: {app: legacy}
    spec:
      containers:
      - name: c
        image: busybox:1.36
`, ns, image)
}

func writeFile(t *testing.T, name, content string) string {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

// TestKubectlScenario runs the user scenario with each kubectl.
func TestKubectlScenario(t *testing.T) {
	s := startServer(t)
	for _, c := range clients(t) {
		c := c
		t.Run(c.name, func(t *testing.T) {
			ns := "e2e-" + strings.ReplaceAll(c.name, ".", "-")
			scenario(t, s, c, ns)
		})
	}
}

func scenario(t *testing.T, s *server, c client, ns string) {
	file := writeFile(t, "app.yaml", manifest(ns, "example.com/web:1.0"))

	// apply, then apply again: nothing changes.
	out := s.must(t, c, "apply", "-f", file)
	contains(t, "first apply", out, "namespace/"+ns+" created", "configmap/settings created", "secret/creds created",
		"deployment.apps/web created", "service/web created", "replicationcontroller/legacy created")
	out = s.must(t, c, "apply", "-f", file)
	for _, obj := range []string{"namespace/" + ns, "configmap/settings", "secret/creds", "deployment.apps/web", "service/web", "replicationcontroller/legacy"} {
		contains(t, "second apply", out, obj+" unchanged")
	}

	// get in every output format.
	out = s.must(t, c, "-n", ns, "get", "deployment", "web", "-o", "yaml")
	contains(t, "get -o yaml", out, "kind: Deployment", "replicas: 2", "strategy:", "maxSurge: 25%", "uid:", "resourceVersion:")
	var deploy map[string]interface{}
	if err := json.Unmarshal([]byte(s.must(t, c, "-n", ns, "get", "deployment", "web", "-o", "json")), &deploy); err != nil {
		t.Fatalf("get -o json is not JSON: %v", err)
	}
	if deploy["metadata"].(map[string]interface{})["generation"].(float64) != 1 {
		t.Errorf("generation of a new deployment: %v", deploy["metadata"])
	}
	out = s.must(t, c, "-n", ns, "get", "deployments", "-o", "wide")
	contains(t, "get deployments -o wide", out, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR", "example.com/web:1.0", "app=web")
	out = s.must(t, c, "-n", ns, "get", "service", "web", "-o", "wide")
	contains(t, "get service -o wide", out, "CLUSTER-IP", "PORT(S)", "80/TCP", "10.43.")
	out = s.must(t, c, "-n", ns, "get", "all")
	contains(t, "get all", out, "deployment.apps/web", "service/web", "replicationcontroller/legacy")
	out = s.must(t, c, "-n", ns, "get", "configmaps,services", "-l", "app=web", "-o", "name")
	if strings.TrimSpace(out) != "configmap/settings\nservice/web" {
		t.Errorf("get -l app=web: %q", out)
	}

	// describe.
	out = s.must(t, c, "-n", ns, "describe", "deployment", "web")
	contains(t, "describe deployment", out, "Name:", "web", "Replicas:", "2 desired", "StrategyType:", "RollingUpdate", "Pod Template:")
	out = s.must(t, c, "-n", ns, "describe", "service", "web")
	contains(t, "describe service", out, "Selector:", "app=web", "TargetPort:", "8080/TCP")

	// label and annotate.
	s.must(t, c, "-n", ns, "label", "configmap", "settings", "color=blue")
	s.must(t, c, "-n", ns, "annotate", "configmap", "settings", "owner=team-a")
	out = s.must(t, c, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.metadata.labels.color} {.metadata.annotations.owner}")
	if out != "blue team-a" {
		t.Errorf("label/annotate: %q", out)
	}

	// the three patch types.
	s.must(t, c, "-n", ns, "patch", "deployment", "web", "--type=strategic", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"example.com/web:2.0"}]}}}}`)
	s.must(t, c, "-n", ns, "patch", "configmap", "settings", "--type=merge", "-p", `{"data":{"mood":"merged"}}`)
	s.must(t, c, "-n", ns, "patch", "configmap", "settings", "--type=json", "-p", `[{"op":"add","path":"/data/extra","value":"jsonpatched"}]`)
	out = s.must(t, c, "-n", ns, "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}")
	if out != "example.com/web:2.0 8080 2" {
		t.Errorf("strategic merge patch kept the ports and bumped generation? got %q", out)
	}
	out = s.must(t, c, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.data.greeting} {.data.mood} {.data.extra}")
	if out != "hello merged jsonpatched" {
		t.Errorf("merge and json patches: %q", out)
	}

	// scale.
	s.must(t, c, "-n", ns, "scale", "deployment", "web", "--replicas=3")
	out = s.must(t, c, "-n", ns, "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}")
	if out != "3" {
		t.Errorf("after scale: replicas %q", out)
	}

	// replace with a modified manifest.
	cm := s.must(t, c, "-n", ns, "get", "configmap", "settings", "-o", "json")
	replaced := writeFile(t, "cm.json", strings.Replace(cm, `"greeting": "hello"`, `"greeting": "replaced"`, 1))
	s.must(t, c, "replace", "-f", replaced)
	if out := s.must(t, c, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.data.greeting}"); out != "replaced" {
		t.Errorf("after replace: %q", out)
	}
	// The same file again carries a stale resourceVersion: 409 Conflict.
	r := s.kubectl(c, "", nil, "replace", "-f", replaced)
	if r.err == nil || !strings.Contains(r.stderr, "Conflict") || !strings.Contains(r.stderr, "the object has been modified") {
		t.Errorf("stale replace: want a 409 Conflict, got %s", r)
	}

	// edit through KUBE_EDITOR.
	editor := writeFile(t, "editor.sh", "#!/bin/sh\nsed -i 's/greeting: replaced/greeting: edited/' \"$1\"\n")
	os.Chmod(editor, 0o755)
	r = s.kubectl(c, "", []string{"KUBE_EDITOR=" + editor}, "-n", ns, "edit", "configmap", "settings")
	if r.err != nil {
		t.Errorf("edit: %s", r)
	}
	if out := s.must(t, c, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.data.greeting}"); out != "edited" {
		t.Errorf("after edit: %q", out)
	}

	// get -w sees changes as they happen.
	watchEvents(t, s, c, ns)

	// api-resources and explain.
	out = s.must(t, c, "api-resources")
	contains(t, "api-resources", out, "deployments", "deploy", "apps/v1", "pods", "po", "horizontalpodautoscalers", "leases")
	out = s.must(t, c, "explain", "deployment.spec.strategy")
	contains(t, "explain", out, "KIND:", "Deployment", "rollingUpdate", "RollingUpdate")

	// --dry-run=server stores nothing.
	s.must(t, c, "-n", ns, "create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server")
	if r := s.kubectl(c, "", nil, "-n", ns, "get", "configmap", "dry"); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("dry-run object exists: %s", r)
	}

	// a bad manifest is a 422 naming the field.
	bad := writeFile(t, "bad.yaml", fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: %s\nspec:\n  containers:\n  - name: c\n", ns))
	r = s.kubectl(c, "", nil, "create", "-f", bad)
	if r.err == nil || !strings.Contains(r.stderr, "is invalid") || !strings.Contains(r.stderr, "spec.containers[0].image: Required value") {
		t.Errorf("bad manifest: want 422 on spec.containers[0].image, got %s", r)
	}
	// and an unknown field is refused (kubectl validates strictly by default).
	unknown := writeFile(t, "unknown.yaml", fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\n  namespace: %s\ndata: {a: b}\nbogus: 1\n", ns))
	r = s.kubectl(c, "", nil, "create", "-f", unknown)
	if r.err == nil || !strings.Contains(r.stderr, `unknown field "bogus"`) {
		t.Errorf("unknown field: want a strict decoding error, got %s", r)
	}

	// delete an object, then the namespace with everything in it.
	s.must(t, c, "-n", ns, "delete", "replicationcontroller", "legacy")
	if r := s.kubectl(c, "", nil, "-n", ns, "get", "rc", "legacy"); r.err == nil {
		t.Errorf("deleted rc still there: %s", r)
	}
	start := time.Now()
	s.must(t, c, "delete", "namespace", ns, "--timeout=60s")
	t.Logf("namespace %s deleted in %s", ns, time.Since(start).Round(time.Millisecond))
	if r := s.kubectl(c, "", nil, "get", "namespace", ns); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("namespace still there: %s", r)
	}
	if out := s.must(t, c, "get", "configmaps,deployments,services", "-n", ns, "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("objects left in the deleted namespace: %q", out)
	}
}

// watchEvents runs `kubectl get -w` and checks it prints a new object and
// its modification.
func watchEvents(t *testing.T, s *server, c client, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], append(c.argv[1:], "-n", ns, "get", "configmaps", "-w", "-o", "custom-columns=NAME:.metadata.name,V:.data.v")...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	var mu sync.Mutex
	var lines []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	seen := func(want string) error {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Join(strings.Fields(l), " ") == want {
				return nil
			}
		}
		return fmt.Errorf("get -w printed %q, want a line %q", lines, want)
	}
	eventually(t, 10*time.Second, func() error { return seen("settings <none>") })
	s.must(t, c, "-n", ns, "create", "configmap", "watched", "--from-literal=v=1")
	eventually(t, 10*time.Second, func() error { return seen("watched 1") })
	s.must(t, c, "-n", ns, "patch", "configmap", "watched", "-p", `{"data":{"v":"2"}}`)
	eventually(t, 10*time.Second, func() error { return seen("watched 2") })
}

// TestRestartKeepsEverything restarts the server on its data dir and finds
// every acknowledged object as it was.
func TestRestartKeepsEverything(t *testing.T) {
	s := startServer(t)
	c := clients(t)[0]
	s.must(t, c, "apply", "-f", writeFile(t, "app.yaml", manifest("keep", "example.com/web:1.0")))
	s.must(t, c, "-n", "keep", "create", "service", "nodeport", "np", "--tcp=80:8080")
	before := s.must(t, c, "-n", "keep", "get", "configmap/settings", "deployment/web", "service/web", "service/np", "-o",
		"jsonpath={range .items[*]}{.metadata.uid} {.metadata.resourceVersion} {.spec.clusterIP} {.spec.ports[*].nodePort} {.spec.replicas} {.data}{\"\\n\"}{end}")
	s.stop()
	s.start()
	after := s.must(t, c, "-n", "keep", "get", "configmap/settings", "deployment/web", "service/web", "service/np", "-o",
		"jsonpath={range .items[*]}{.metadata.uid} {.metadata.resourceVersion} {.spec.clusterIP} {.spec.ports[*].nodePort} {.spec.replicas} {.data}{\"\\n\"}{end}")
	if before != after || strings.Count(after, "\n") != 4 {
		t.Fatalf("state changed across restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The restarted server still allocates without reusing held values.
	s.must(t, c, "-n", "keep", "create", "service", "clusterip", "other", "--tcp=81:8080")
	ips := s.must(t, c, "-n", "keep", "get", "services", "-o", "jsonpath={.items[*].spec.clusterIP}")
	seen := map[string]bool{}
	for _, ip := range strings.Fields(ips) {
		if seen[ip] {
			t.Fatalf("cluster IP %s given twice after restart: %s", ip, ips)
		}
		seen[ip] = true
	}
}

// TestAnonymousRequestsAreRefused checks that the API needs credentials.
func TestAnonymousRequestsAreRefused(t *testing.T) {
	s := startServer(t)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get(s.url() + "/api/v1/namespaces")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous list: %s, want 401", resp.Status)
	}
	// Plain HTTP is not served at all.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if strings.Contains(reply, "200 OK") {
		t.Fatalf("plain HTTP was answered: %q", reply)
	}
}
