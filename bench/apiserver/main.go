// Command apiserver benchmarks `navarch server`: cold start to /readyz on a
// fresh and on an existing data dir, resident memory idle and with 10,000
// pods stored, and GET one pod / LIST 500 pods latency with 10,000 pods.
// It prints a Markdown table for bench/RESULTS.md.
//
// Usage: go run ./bench/apiserver -navarch ./bin/navarch [-pods 10000]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	bin := flag.String("navarch", "./bin/navarch", "navarch binary")
	pods := flag.Int("pods", 10000, "pods to store")
	starts := flag.Int("starts", 5, "cold starts to time")
	flag.Parse()
	if err := run(*bin, *pods, *starts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type server struct {
	cmd  *exec.Cmd
	dir  string
	port int
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start launches the server and returns it with the time until /readyz said 200.
func start(bin, dir string, port int) (*server, time.Duration, error) {
	cmd := exec.Command(bin, "server", "--data-dir", dir, "--secure-port", strconv.Itoa(port), "--disable-agent", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: time.Second}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", port)
	for time.Since(begin) < 60*time.Second {
		resp, err := insecure.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return &server{cmd: cmd, dir: dir, port: port}, time.Since(begin), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	return nil, 0, fmt.Errorf("server not ready after 60s")
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// rssMB reads the process's resident set size.
func (s *server) rssMB() float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func run(bin string, pods, starts int) error {
	root, err := os.MkdirTemp("", "navarch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	var fresh, restart []time.Duration
	for i := 0; i < starts; i++ {
		dir := filepath.Join(root, fmt.Sprintf("cold-%d", i))
		s, d, err := start(bin, dir, freePort())
		if err != nil {
			return err
		}
		fresh = append(fresh, d)
		s.stop()
		s, d, err = start(bin, dir, freePort())
		if err != nil {
			return err
		}
		restart = append(restart, d)
		s.stop()
	}

	dir := filepath.Join(root, "main")
	s, _, err := start(bin, dir, freePort())
	if err != nil {
		return err
	}
	defer s.stop()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(kubeconfig); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	idle := s.rssMB()

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	cfg.ContentType = "application/json"
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	createStart := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if _, err := client.CoreV1().Pods("bench").Create(ctx, benchPod(i), metav1.CreateOptions{}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < pods; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("creating pods: %w", err)
	default:
	}
	createTime := time.Since(createStart)
	time.Sleep(5 * time.Second)
	loaded := s.rssMB()

	// Raw HTTPS (HTTP/2, client certificate) so the numbers are the server's,
	// not a client library's decoding.
	httpClient, err := rawClient(cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData)
	if err != nil {
		return err
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", s.port)
	fetch := func(path string) (time.Duration, error) {
		t := time.Now()
		resp, err := httpClient.Get(base + path)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return time.Since(t), nil
	}
	for i := 0; i < 200; i++ { // warm up connections
		fetch("/api/v1/namespaces/bench/pods/pod-0")
	}
	var gets, lists []time.Duration
	for i := 0; i < 5000; i++ {
		d, err := fetch(fmt.Sprintf("/api/v1/namespaces/bench/pods/pod-%d", rand.Intn(pods)))
		if err != nil {
			return err
		}
		gets = append(gets, d)
	}
	for i := 0; i < 300; i++ {
		d, err := fetch("/api/v1/namespaces/bench/pods?limit=500")
		if err != nil {
			return err
		}
		lists = append(lists, d)
	}

	host, _ := os.Hostname()
	fmt.Printf("| measure | result |\n|---|---|\n")
	fmt.Printf("| machine | %s, %d cores |\n", host, numCPU())
	fmt.Printf("| cold start to /readyz, fresh data dir (median of %d) | %s |\n", starts, ms(median(fresh)))
	fmt.Printf("| cold start to /readyz, restart on same data dir (median of %d) | %s |\n", starts, ms(median(restart)))
	fmt.Printf("| resident memory, idle | %.0f MB |\n", idle)
	fmt.Printf("| create %d pods (32 clients) | %.1f s (%.0f pods/s) |\n", pods, createTime.Seconds(), float64(pods)/createTime.Seconds())
	fmt.Printf("| resident memory with %d pods | %.0f MB |\n", pods, loaded)
	fmt.Printf("| GET one pod, p50 / p99 (5000 requests) | %s / %s |\n", ms(percentile(gets, 0.5)), ms(percentile(gets, 0.99)))
	fmt.Printf("| LIST 500 pods, p50 / p99 (300 requests) | %s / %s |\n", ms(percentile(lists, 0.5)), ms(percentile(lists, 0.99)))
	return nil
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}

func rawClient(caPEM, certPEM, keyPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	if err := http2.ConfigureTransport(tr); err != nil {
		return nil, err
	}
	return &http.Client{Transport: tr}, nil
}

// benchPod is a pod of typical size (labels, resources, env). It names a
// scheduler that does not run, so the measurement is of the API server
// storing and serving pods (as upstream's reference numbers are), not of the
// scheduler reporting 10,000 pods unschedulable on a cluster without nodes.
func benchPod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"app": "bench", "shard": strconv.Itoa(i % 10)}},
		Spec: corev1.PodSpec{SchedulerName: "bench-no-scheduler", Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/bench/app:1.0",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080, Name: "http"}},
			Env:   []corev1.EnvVar{{Name: "MODE", Value: "bench"}, {Name: "INDEX", Value: strconv.Itoa(i)}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			},
		}}},
	}
}
