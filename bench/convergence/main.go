// Command convergence benchmarks how fast `navarch server` converges a
// Deployment on hollow nodes: it starts the real server and, in a separate
// process, `navarch sim` with 100 nodes, creates one Deployment of N
// replicas, and watches its pods until all are created, bound and Running;
// then scales it to 0 and waits until every pod is gone. It reports seconds
// and pods per second of each step, the server's CPU seconds (user+system,
// from /proc) and its peak resident memory (VmHWM), as a Markdown table for
// bench/RESULTS.md. The server and the hollow nodes run with their defaults.
//
// Usage: go run ./bench/convergence -navarch ./bin/navarch [-nodes 100] [-replicas 3000,10000]
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func main() {
	bin := flag.String("navarch", "./bin/navarch", "navarch binary")
	nodes := flag.Int("nodes", 100, "hollow nodes")
	replicas := flag.String("replicas", "3000,10000", "comma-separated Deployment sizes, one run each on a fresh cluster")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up on a step after this long")
	flag.Parse()
	var sizes []int
	for _, f := range strings.Split(*replicas, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -replicas: %q is not a positive number\n", f)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	var rows []result
	for _, n := range sizes {
		r, err := runOnce(*bin, *nodes, n, *timeout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%d replicas: %+v\n", n, r)
	}
	printTable(*nodes, rows)
}

// result is one run's measurements; durations are from the Deployment's create.
type result struct {
	replicas                 int
	created, bound, running  time.Duration
	gone                     time.Duration // from the scale to 0
	serverCPU                time.Duration // during create..running
	serverCPUDown            time.Duration // during scale to 0
	peakRSSMB, simCPUSeconds float64
}

type proc struct{ cmd *exec.Cmd }

func startProc(name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

// cpu is the process's user+system time so far.
func (p *proc) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which is in parentheses): utime is the
	// 14th field of the line, stime the 15th, in clock ticks (100 per second).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// peakRSSMB is the process's high-water resident set size.
func (p *proc) peakRSSMB() float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitReady(port int) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return fmt.Errorf("server not ready after 60s")
}

// podCounter follows the bench pods through a watch and records when each
// count first reached the target.
type podCounter struct {
	mu                  sync.Mutex
	bound, running      map[types.UID]bool
	all                 map[types.UID]bool
	target              int
	createdAt, boundAt  time.Time
	runningAt, goneAt   time.Time
	start               time.Time
	scaledDown, changed chan struct{}
}

func (c *podCounter) observe(obj interface{}, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if deleted {
		delete(c.all, p.UID)
		delete(c.bound, p.UID)
		delete(c.running, p.UID)
	} else {
		c.all[p.UID] = true
		if p.Spec.NodeName != "" {
			c.bound[p.UID] = true
		}
		if p.Status.Phase == corev1.PodRunning {
			c.running[p.UID] = true
		}
	}
	if c.createdAt.IsZero() && len(c.all) >= c.target {
		c.createdAt = now
	}
	if c.boundAt.IsZero() && len(c.bound) >= c.target {
		c.boundAt = now
	}
	if c.runningAt.IsZero() && len(c.running) >= c.target {
		c.runningAt = now
	}
	if c.scaledDown != nil && c.goneAt.IsZero() && len(c.all) == 0 {
		c.goneAt = now
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *podCounter) waitFor(timeout time.Duration, done func() bool, what string) error {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		ok := done()
		n, b, r := len(c.all), len(c.bound), len(c.running)
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-c.changed:
		case <-time.After(time.Second):
		case <-deadline:
			return fmt.Errorf("%s: timed out with %d pods, %d bound, %d running", what, n, b, r)
		}
	}
}

func runOnce(bin string, nodes, replicas int, timeout time.Duration) (result, error) {
	res := result{replicas: replicas}
	dir, err := os.MkdirTemp("", "navarch-convergence-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	port := freePort()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	server, err := startProc(bin, "server", "--data-dir", dir, "--secure-port", strconv.Itoa(port),
		"--write-kubeconfig", kubeconfig, "--disable-agent", "--log-level", "warn")
	if err != nil {
		return res, err
	}
	defer server.stop()
	if err := waitReady(port); err != nil {
		return res, err
	}
	sim, err := startProc(bin, "sim", "--nodes", strconv.Itoa(nodes), "--kubeconfig", kubeconfig)
	if err != nil {
		return res, err
	}
	defer sim.stop()

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return res, err
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = 1000, 2000, "convergence-bench"
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) >= nodes {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%d hollow nodes did not register in 60s", nodes)
		}
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return res, err
	}

	counter := &podCounter{all: map[types.UID]bool{}, bound: map[types.UID]bool{}, running: map[types.UID]bool{},
		target: replicas, changed: make(chan struct{}, 1)}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace("bench"))
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o interface{}) { counter.observe(o, false) },
		UpdateFunc: func(_, o interface{}) { counter.observe(o, false) },
		DeleteFunc: func(o interface{}) { counter.observe(o, true) },
	})
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	cache.WaitForCacheSync(stop, inf.HasSynced)

	labels := map[string]string{"app": "bench"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "bench"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example.com/bench:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}},
				}}},
			},
		},
	}
	simCPU0 := sim.cpu()
	cpu0 := server.cpu()
	counter.mu.Lock()
	counter.start = time.Now()
	counter.mu.Unlock()
	if _, err := client.AppsV1().Deployments("bench").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return res, err
	}
	if err := counter.waitFor(timeout, func() bool { return !counter.runningAt.IsZero() }, "scale up"); err != nil {
		return res, err
	}
	res.serverCPU = server.cpu() - cpu0
	res.simCPUSeconds = (sim.cpu() - simCPU0).Seconds()
	counter.mu.Lock()
	res.created, res.bound, res.running = counter.createdAt.Sub(counter.start), counter.boundAt.Sub(counter.start), counter.runningAt.Sub(counter.start)
	counter.scaledDown = make(chan struct{})
	counter.mu.Unlock()

	cpu1 := server.cpu()
	down := time.Now()
	if _, err := client.AppsV1().Deployments("bench").Patch(ctx, "bench", types.MergePatchType,
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		return res, err
	}
	if err := counter.waitFor(timeout, func() bool { return !counter.goneAt.IsZero() }, "scale down"); err != nil {
		return res, err
	}
	counter.mu.Lock()
	res.gone = counter.goneAt.Sub(down)
	counter.mu.Unlock()
	res.serverCPUDown = server.cpu() - cpu1
	res.peakRSSMB = server.peakRSSMB()
	return res, nil
}

func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f pods/s", float64(n)/d.Seconds())
}

func printTable(nodes int, rows []result) {
	fmt.Printf("| replicas (%d hollow nodes) | all created | all bound | all Running | server CPU up | CPU per pod | peak RSS | scale to 0: all gone | server CPU down |\n", nodes)
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %d | %.2f s (%s) | %.2f s (%s) | %.2f s (%s) | %.1f s | %.2f ms | %.0f MB | %.2f s (%s) | %.1f s |\n",
			r.replicas, r.created.Seconds(), rate(r.replicas, r.created), r.bound.Seconds(), rate(r.replicas, r.bound),
			r.running.Seconds(), rate(r.replicas, r.running), r.serverCPU.Seconds(),
			float64(r.serverCPU.Microseconds())/1000/float64(r.replicas), r.peakRSSMB,
			r.gone.Seconds(), rate(r.replicas, r.gone), r.serverCPUDown.Seconds())
		fmt.Printf("<!-- sim CPU during scale-up: %.1f s -->\n", r.simCPUSeconds)
	}
}
