// Command node benchmarks one node agent through the real binary: it starts
// `navarch server --disable-agent` and, as a process of its own, `navarch
// agent` with the built-in runtime and the testserver image imported, and
// measures pod start-up latency (Create until a watch shows the pod
// Running) for 100 pods one at a time and 100 pods 20 at a time, and the
// agent's memory idle and with a Deployment of 50 pods, the pods'
// container shims included; beside the latencies, the CPU per pod of the
// agent, its shims, the server and the whole machine. It prints Markdown
// tables for bench/RESULTS.md.
//
// The pods of each latency run are kept until the run ends (so the last
// pods start on a node running up to 99 others), then deleted, and the
// next run starts once they and their shims are gone. Everything the node
// made is removed at the end as the e2e tests do: pods deleted while the
// agent runs, then the agent stopped, then shims, mounts, the bridge, the
// nftables table (only if this run made it) and the cgroups removed, and
// net.ipv4.ip_forward put back as found. Needs root, runc, and `make build
// images`.
//
// Usage: go run ./bench/node -navarch ./bin/navarch [-pods 100] [-parallel 20] [-replicas 50]
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/internal/nodetest"
)

const (
	image     = "navarch.io/testserver:1"
	namespace = "bench"
	// nftTable is the built-in network's masquerade table (cni-NETWORK of
	// the agent's default network name).
	nftTable = "cni-navarch"
	idleWait = 15 * time.Second
)

func main() {
	bin := flag.String("navarch", "./bin/navarch", "navarch binary")
	images := flag.String("images", "bin/images/testserver.tar", "OCI tarball of "+image+" (make images)")
	pods := flag.Int("pods", 100, "pods per latency run")
	parallel := flag.Int("parallel", 20, "pods created at a time in the second latency run")
	replicas := flag.Int("replicas", 50, "replicas of the Deployment the memory is measured with")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (namespaces, mounts, cgroups, bridges)")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	// Ctrl-C ends the run through its cleanup, not around it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{bin: abs, tarball: *images}
	res, err := b.run(ctx, *pods, *parallel, *replicas)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if b.agentLog != "" {
			fmt.Fprintf(os.Stderr, "agent log (tail):\n%s\n", tail(b.agentLog, 4000))
		}
		os.Exit(1)
	}
	printResults(res, *pods, *parallel, *replicas)
}

// bench is one run's cluster: the server, the agent and what the cleanup
// has to put back.
type bench struct {
	bin, tarball string
	dir          string // temporary: the server's and the agent's data dirs, logs
	agentDir     string
	bridge       string
	cgroupRoot   string
	nodeName     string
	client       *kubernetes.Clientset

	server, agent *exec.Cmd
	agentExited   chan error
	agentLog      string

	host *nodetest.Host // ip_forward, the nftables table and the runtime's cgroups as they were
}

// results is what the run measured.
type results struct {
	sequential, parallel   []time.Duration // sorted
	seqCPU, parCPU         phaseCPU
	idle, loaded           memory
	idleShims, loadedShims shims
	deploymentRunning      time.Duration
}

func (b *bench) run(ctx context.Context, pods, parallel, replicas int) (*results, error) {
	var err error
	if b.dir, err = os.MkdirTemp("", "navarch-bench-node-"); err != nil {
		return nil, err
	}
	b.host = nodetest.SaveHost(nftTable, "/sys/fs/cgroup/*/navarch")
	cidr, err := nodetest.FreeCIDR()
	if err != nil {
		return nil, err
	}

	// The control plane, without an agent of its own.
	port := freePort()
	kubeconfig := filepath.Join(b.dir, "admin.kubeconfig")
	b.server = exec.Command(b.bin, "server", "--data-dir", filepath.Join(b.dir, "server"), "--secure-port", strconv.Itoa(port),
		"--write-kubeconfig", kubeconfig, "--disable-agent", "--cluster-cidr", cidr.String(), "--log-level", "warn")
	b.server.Stderr = os.Stderr
	if err := b.server.Start(); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, port); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = 500, 1000, "node-bench"
	b.client = kubernetes.NewForConfigOrDie(cfg)

	// The node: the image imported into its data dir, then the agent with
	// a bridge, kubelet port, pod CIDR and cgroup root of its own.
	b.agentDir = filepath.Join(b.dir, "agent")
	if err := os.MkdirAll(b.agentDir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command(b.bin, "image", "import", "--data-dir", b.agentDir, b.tarball).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("navarch image import %s: %v\n%s", b.tarball, err, out)
	}
	suffix := randHex(3)
	b.bridge, b.cgroupRoot, b.nodeName = "nvbench"+suffix, "/navarch-bench-"+suffix, "bench-node-"+suffix
	podCIDR := &net.IPNet{IP: append(net.IP(nil), cidr.IP.To4()...), Mask: net.CIDRMask(24, 32)}
	podCIDR.IP[2] = 1
	b.agentLog = filepath.Join(b.dir, "agent.log")
	logf, err := os.Create(b.agentLog)
	if err != nil {
		return nil, err
	}
	agent := exec.Command(b.bin, "agent", "--kubeconfig", kubeconfig, "--data-dir", b.agentDir, "--node-name", b.nodeName,
		"--kubelet-port", strconv.Itoa(freePort()), "--node-ip", "127.0.0.1", "--bridge-name", b.bridge,
		"--cgroup-root", b.cgroupRoot, "--cluster-cidr", cidr.String(), "--pod-cidr", podCIDR.String())
	agent.Stdout, agent.Stderr = logf, logf
	// A process group of its own, so that the cleanup can end whatever it
	// started.
	agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := agent.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	b.agent, b.agentExited = agent, make(chan error, 1)
	go func() { b.agentExited <- agent.Wait(); logf.Close() }()
	if err := b.waitNodeReady(ctx); err != nil {
		return nil, err
	}
	if err := b.setupNamespace(ctx); err != nil {
		return nil, err
	}

	res := &results{}
	fmt.Fprintf(os.Stderr, "node %s Ready; %s idle\n", b.nodeName, idleWait)
	if err := sleep(ctx, idleWait); err != nil {
		return nil, err
	}
	if res.idle, err = readMemory(b.agent.Process.Pid); err != nil {
		return nil, err
	}
	res.idleShims = b.shims()
	fmt.Fprintf(os.Stderr, "idle: %+v, shims %+v\n", res.idle, res.idleShims)

	w, err := startRunningWatch(ctx, b.client)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	for _, at := range []int{1, parallel} {
		before := b.cpuNow()
		lat, err := b.latencyRun(ctx, w, pods, at)
		if err != nil {
			return nil, err
		}
		used := b.cpuNow().since(before)
		fmt.Fprintf(os.Stderr, "%d at a time: %+v\n", at, used)
		fmt.Fprintf(os.Stderr, "%d pods, %d at a time: p50 %v p90 %v p99 %v max %v\n", pods, at,
			pct(lat, 0.5), pct(lat, 0.9), pct(lat, 0.99), lat[len(lat)-1])
		if at == 1 {
			res.sequential, res.seqCPU = lat, used
		} else {
			res.parallel, res.parCPU = lat, used
		}
		if err := b.deleteAll(ctx); err != nil {
			return nil, err
		}
	}

	if res.deploymentRunning, err = b.deployment(ctx, replicas); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "deployment of %d: all Running after %v; %s idle\n", replicas, res.deploymentRunning, idleWait)
	if err := sleep(ctx, idleWait); err != nil {
		return nil, err
	}
	if res.loaded, err = readMemory(b.agent.Process.Pid); err != nil {
		return nil, err
	}
	res.loadedShims = b.shims()
	fmt.Fprintf(os.Stderr, "%d pods: %+v, shims %+v\n", replicas, res.loaded, res.loadedShims)
	return res, nil
}

// waitNodeReady waits for the node's Ready condition, failing early if the
// agent exits.
func (b *bench) waitNodeReady(ctx context.Context) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-b.agentExited:
			b.agentExited <- err
			return fmt.Errorf("agent exited: %v", err)
		default:
		}
		if n, err := b.client.CoreV1().Nodes().Get(ctx, b.nodeName, metav1.GetOptions{}); err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("node %s not Ready after 60s", b.nodeName)
}

// setupNamespace creates the bench namespace and waits for its default
// service account, without which pods are refused.
func (b *bench) setupNamespace(ctx context.Context) error {
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("namespace %s: %w", namespace, err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if _, err := b.client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("no service account default in namespace %s after 30s", namespace)
}

func podSpec() corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To(int64(5)),
		Containers:                    []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullNever}},
	}
}

// latencyRun creates pods, at a time at most, each timed from just before
// its Create until the watch shows it Running; it returns the latencies
// sorted.
func (b *bench) latencyRun(ctx context.Context, w *runningWatch, pods, at int) ([]time.Duration, error) {
	lat := make([]time.Duration, pods)
	errs := make([]error, pods)
	sem := make(chan struct{}, at)
	var wg sync.WaitGroup
	for i := 0; i < pods; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			name := fmt.Sprintf("start-%d-%d", at, i)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"bench": "start"}}, Spec: podSpec()}
			running := w.running(name)
			start := time.Now()
			if _, err := b.client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				errs[i] = fmt.Errorf("create pod %s: %w", name, err)
				return
			}
			select {
			case t := <-running:
				lat[i] = t.Sub(start)
			case <-time.After(2 * time.Minute):
				errs[i] = fmt.Errorf("pod %s not Running after 2m", name)
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat, nil
}

// deployment creates a Deployment of replicas and returns once all its
// pods are Running, with the time that took.
func (b *bench) deployment(ctx context.Context, replicas int) (time.Duration, error) {
	labels := map[string]string{"bench": "memory"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "memory", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec()},
		},
	}
	start := time.Now()
	if _, err := b.client.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return 0, fmt.Errorf("deployment memory: %w", err)
	}
	for deadline := start.Add(3 * time.Minute); time.Now().Before(deadline); {
		l, err := b.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "bench=memory"})
		if err == nil {
			n := 0
			for _, p := range l.Items {
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
					n++
				}
			}
			if n >= replicas {
				return time.Since(start), nil
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("deployment memory: not all %d pods Running after 3m", replicas)
}

// deleteAll deletes the bench namespace's Deployments and pods and waits
// until the pods are gone and the node has no shims left.
func (b *bench) deleteAll(ctx context.Context) error {
	deps, err := b.client.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	bg := metav1.DeletePropagationBackground
	for _, d := range deps.Items {
		if err := b.client.AppsV1().Deployments(namespace).Delete(ctx, d.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
			return fmt.Errorf("delete deployment %s: %w", d.Name, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		l, err := b.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			if len(l.Items) == 0 && b.shims().count == 0 {
				return nil
			}
			var wg sync.WaitGroup
			sem := make(chan struct{}, 20)
			for _, p := range l.Items {
				if p.DeletionTimestamp != nil {
					continue
				}
				wg.Add(1)
				sem <- struct{}{}
				go func(name string) {
					defer func() { <-sem; wg.Done() }()
					_ = b.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{})
				}(p.Name)
			}
			wg.Wait()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods or shims not gone 2m after their delete: %v, %d shims", err, b.shims().count)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// runningWatch follows the bench namespace's pods and records when each was
// first seen Running.
type runningWatch struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	waiters map[string]chan time.Time
	cancel  context.CancelFunc
}

func startRunningWatch(ctx context.Context, client kubernetes.Interface) (*runningWatch, error) {
	l, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &runningWatch{seen: map[string]time.Time{}, waiters: map[string]chan time.Time{}, cancel: cancel}
	rv := l.ResourceVersion
	go func() {
		// A watch the server ends is resumed from the last version seen.
		for ctx.Err() == nil {
			wi, err := client.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					if ev.Type == watch.Error {
						rv = "" // expired: from now on
					}
					continue
				}
				rv = p.ResourceVersion
				if ev.Type != watch.Deleted && p.Status.Phase == corev1.PodRunning {
					w.sawRunning(p.Name, time.Now())
				}
			}
			wi.Stop()
		}
	}()
	return w, nil
}

func (w *runningWatch) sawRunning(name string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.seen[name]; ok {
		return
	}
	w.seen[name] = at
	if ch, ok := w.waiters[name]; ok {
		ch <- at
	}
}

// running returns a channel that receives the time name is first seen
// Running; ask before creating the pod.
func (w *runningWatch) running(name string) <-chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan time.Time, 1)
	w.waiters[name] = ch
	if at, ok := w.seen[name]; ok {
		ch <- at
	}
	return ch
}

func (w *runningWatch) stop() { w.cancel() }

// phaseCPU is the wall time of a step and the CPU used in it by the agent
// (its own, and that of the children it reaped: runc start, kill, ...), by
// the live shims (with their reaped children: runc create) and by the
// server.
type phaseCPU struct {
	at                               time.Time
	wall                             time.Duration
	agent, agentChildren, shims, srv time.Duration
	// busy is the whole machine's non-idle CPU time (/proc/stat).
	busy time.Duration
}

// machineBusy is the CPU time all CPUs spent since boot in user, nice,
// system, irq and softirq (not idle, I/O wait or stolen by the hypervisor).
func machineBusy() time.Duration {
	data, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i := 1; i < len(f) && i <= 7; i++ {
		if i == 4 || i == 5 {
			continue
		}
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func (b *bench) cpuNow() phaseCPU {
	a, ac := procCPU(b.agent.Process.Pid)
	s, _ := procCPU(b.server.Process.Pid)
	var sh time.Duration
	for _, pid := range nodetest.ShimPIDs(b.agentDir) {
		self, children := procCPU(pid)
		sh += self + children
	}
	return phaseCPU{at: time.Now(), agent: a, agentChildren: ac, shims: sh, srv: s, busy: machineBusy()}
}

func (p phaseCPU) since(q phaseCPU) phaseCPU {
	return phaseCPU{wall: p.at.Sub(q.at), agent: p.agent - q.agent, agentChildren: p.agentChildren - q.agentChildren,
		shims: p.shims - q.shims, srv: p.srv - q.srv, busy: p.busy - q.busy}
}

// procCPU is the process's user+system time and that of its reaped
// children, from /proc/PID/stat.
func procCPU(pid int) (self, children time.Duration) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command name (in parentheses): utime, stime,
	// cutime, cstime are the 14th to 17th of the line, in clock ticks
	// (100 per second).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * 10 * time.Millisecond
	}
	return tick(11) + tick(12), tick(13) + tick(14)
}

// memory is a process's resident memory in kB: from /proc/PID/status and,
// proportional and huge-page mapped, from /proc/PID/smaps_rollup.
type memory struct {
	VmRSS, RssAnon, RssFile, RssShmem int
	Pss, PssAnon, PssFile             int
	FilePmdMapped                     int
}

func readMemory(pid int) (memory, error) {
	var m memory
	status, err := procFields(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	rollup, err := procFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	m.VmRSS, m.RssAnon, m.RssFile, m.RssShmem = status["VmRSS"], status["RssAnon"], status["RssFile"], status["RssShmem"]
	m.Pss, m.PssAnon, m.PssFile, m.FilePmdMapped = rollup["Pss"], rollup["Pss_Anon"], rollup["Pss_File"], rollup["FilePmdMapped"]
	return m, nil
}

// procFields reads the "Name: N kB" lines of a /proc file.
func procFields(path string) (map[string]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		f := strings.Fields(v)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// shims are the container shims of the agent's pods, summed (kB).
type shims struct {
	count, pss, rssAnon, vmRSS int
}

func (b *bench) shims() shims {
	var s shims
	for _, pid := range nodetest.ShimPIDs(b.agentDir) {
		m, err := readMemory(pid)
		if err != nil {
			continue
		}
		s.count++
		s.pss += m.Pss
		s.rssAnon += m.RssAnon
		s.vmRSS += m.VmRSS
	}
	return s
}

// cleanup removes what the run made, in the e2e tests' order: pods while
// the agent runs, then the agent, then what the node left, then the server.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if b.agent != nil && b.client != nil && b.agentRunning() {
		if err := b.deleteAll(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}
	if b.agent != nil {
		pgid := b.agent.Process.Pid
		_ = b.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.agentExited:
		case <-time.After(20 * time.Second):
			fmt.Fprintln(os.Stderr, "cleanup: agent did not stop within 20s of SIGTERM; killing it")
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-b.agentExited
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if b.agentDir != "" {
		found, errs := nodetest.RemoveNodeLeftovers(b.agentDir)
		for _, f := range found {
			fmt.Fprintf(os.Stderr, "cleanup: %s left\n", f)
		}
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}
	if b.bridge != "" {
		if l, err := netlink.LinkByName(b.bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				fmt.Fprintf(os.Stderr, "cleanup: bridge %s: %v\n", b.bridge, err)
			}
		}
	}
	if b.host != nil {
		globs := []string{"/sys/fs/cgroup/*/navarch"}
		if b.cgroupRoot != "" {
			globs = append(globs, "/sys/fs/cgroup/*"+b.cgroupRoot)
		}
		for _, h := range b.host.NewCgroups(globs...) {
			nodetest.RemoveCgroupTree(h)
		}
		for _, err := range b.host.Restore() {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}
	if b.server != nil && b.server.Process != nil {
		_ = b.server.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = b.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = b.server.Process.Kill()
			<-done
		}
	}
	if b.dir != "" {
		if err := os.RemoveAll(b.dir); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		}
	}
}

func (b *bench) agentRunning() bool {
	select {
	case err := <-b.agentExited:
		b.agentExited <- err
		return false
	default:
		return true
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitReady(ctx context.Context, port int) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("server not ready after 60s")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// pct is the q-quantile of sorted latencies (nearest rank below).
func pct(lat []time.Duration, q float64) time.Duration {
	return lat[int(q*float64(len(lat)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

func mb(kb int) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

// machine describes this host: CPUs, memory, kernel, runc.
func machine() string {
	mem, _ := procFields("/proc/meminfo")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	runc := "runc not found"
	if out, err := exec.Command("runc", "--version").Output(); err == nil {
		runc, _, _ = strings.Cut(string(out), "\n")
	}
	nproc := "?"
	if out, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s CPUs, %.1f GiB, kernel %s, %s", nproc, float64(mem["MemTotal"])/1024/1024, strings.TrimSpace(string(kernel)), runc)
}

func printResults(r *results, pods, parallel, replicas int) {
	fmt.Printf("Machine: %s; %s\n\n", machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Println("| pod create to Running (watch), image present | p50 | p90 | p99 | max | goal (issue 4) |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(what string, lat []time.Duration, goal string) {
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", what, ms(pct(lat, 0.5)), ms(pct(lat, 0.9)), ms(pct(lat, 0.99)), ms(lat[len(lat)-1]), goal)
	}
	row(fmt.Sprintf("%d pods, one at a time", pods), r.sequential, verdict(pct(r.sequential, 0.5), 300*time.Millisecond, "p50 < 300 ms")+", "+
		verdict(pct(r.sequential, 0.99), 800*time.Millisecond, "p99 < 800 ms"))
	row(fmt.Sprintf("%d pods, %d at a time", pods, parallel), r.parallel, "— (upstream's SLO: p99 < 5 s)")
	fmt.Println()
	fmt.Println("| CPU per pod (user+system) | wall | agent | its runc children (start, kill...) | shims, runc create included | server | whole machine (CPUs busy) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, c := range []struct {
		what string
		cpu  phaseCPU
	}{{"one at a time", r.seqCPU}, {fmt.Sprintf("%d at a time", parallel), r.parCPU}} {
		fmt.Printf("| %s | %.1f s | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.0f ms (%.2f) |\n", c.what, c.cpu.wall.Seconds(),
			perPod(c.cpu.agent, pods), perPod(c.cpu.agentChildren, pods), perPod(c.cpu.shims, pods), perPod(c.cpu.srv, pods),
			perPod(c.cpu.busy, pods), c.cpu.busy.Seconds()/c.cpu.wall.Seconds())
	}
	fmt.Println()
	fmt.Printf("Deployment of %d: all Running %.2f s after its create.\n\n", replicas, r.deploymentRunning.Seconds())
	fmt.Printf("| memory, %s after | 0 pods | %d pods | goal (issue 4) |\n", idleWait, replicas)
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| agent VmRSS | %s | %s | < 50 MB with %d pods: %s |\n", mb(r.idle.VmRSS), mb(r.loaded.VmRSS), replicas,
		map[bool]string{true: "met", false: "not met"}[r.loaded.VmRSS < 50*1024])
	fmt.Printf("| agent RssAnon (its private memory) | %s | %s | — |\n", mb(r.idle.RssAnon), mb(r.loaded.RssAnon))
	fmt.Printf("| agent RssFile (pages of the binary) | %s | %s | — |\n", mb(r.idle.RssFile), mb(r.loaded.RssFile))
	fmt.Printf("| agent FilePmdMapped (of RssFile, in 2 MB mappings) | %s | %s | — |\n", mb(r.idle.FilePmdMapped), mb(r.loaded.FilePmdMapped))
	fmt.Printf("| agent Pss (shared pages split among their users) | %s | %s | — |\n", mb(r.idle.Pss), mb(r.loaded.Pss))
	fmt.Printf("| container shims | %d | %d | — |\n", r.idleShims.count, r.loadedShims.count)
	fmt.Printf("| shims' summed Pss | %s | %s | — |\n", mb(r.idleShims.pss), mb(r.loadedShims.pss))
	fmt.Printf("| shims' summed RssAnon | %s | %s | — |\n", mb(r.idleShims.rssAnon), mb(r.loadedShims.rssAnon))
	fmt.Printf("<!-- shims' summed VmRSS: %s / %s; agent Pss_Anon %s / %s, Pss_File %s / %s -->\n",
		mb(r.idleShims.vmRSS), mb(r.loadedShims.vmRSS), mb(r.idle.PssAnon), mb(r.loaded.PssAnon), mb(r.idle.PssFile), mb(r.loaded.PssFile))
}

func perPod(d time.Duration, pods int) float64 { return float64(d.Milliseconds()) / float64(pods) }

func verdict(got, limit time.Duration, goal string) string {
	if got < limit {
		return goal + ": met"
	}
	return goal + ": not met"
}
