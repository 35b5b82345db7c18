package kubelet

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/internal/pki"
)

// logNode is a test node whose kubelet serves HTTPS on loopback, and whose
// API server proxies pods/log to it with a client certificate of a test CA.
func logNode(t *testing.T) (*testNode, *pki.Bundle, int32) {
	certs, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *apiserver.Config) {
		c.KubeletClientCertPEM, c.KubeletClientKeyPEM = certs.KubeletClientCertPEM, certs.KubeletClientKeyPEM
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Listener: ln, Runtime: runtimeapi.NewRuntimeServiceClient(n.conn),
		CertDir: filepath.Join(n.dataDir, "pki"), Hosts: []string{"127.0.0.1"}, ClientCAPEM: certs.CACertPEM})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("kubelet server: %v", err)
		}
	})
	// The kubelet publishes the port and the loopback address from its
	// next start on.
	n.kubeletPort, n.nodeIP = srv.Port(), "127.0.0.1"
	n.stopKubelet()
	n.startKubelet()
	apiservertest.Eventually(t, 10*time.Second, "node publishes the kubelet endpoint", func() error {
		node, err := n.client.CoreV1().Nodes().Get(context.Background(), n.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Status.DaemonEndpoints.KubeletEndpoint.Port != srv.Port() {
			return fmt.Errorf("kubelet endpoint %+v", node.Status.DaemonEndpoints)
		}
		return nil
	})
	return n, certs, srv.Port()
}

func (n *testNode) logs(pod string, o *corev1.PodLogOptions) (string, error) {
	rc, err := n.client.CoreV1().Pods("default").GetLogs(pod, o).Stream(context.Background())
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestKubeletServerLogs(t *testing.T) {
	n, certs, port := logNode(t)
	ctx := context.Background()

	// A pod that prints three lines, then ticks until told to stop.
	n.createAndWait(busyboxPod("printer", corev1.RestartPolicyNever,
		`echo one; echo two; echo three; i=0; while [ $i -lt 40 ]; do sleep 0.2; echo tick $i; i=$((i+1)); done`), corev1.PodRunning)
	apiservertest.Eventually(t, 10*time.Second, "all lines", func() error {
		out, err := n.logs("printer", &corev1.PodLogOptions{})
		if err != nil || !strings.HasPrefix(out, "one\ntwo\nthree\ntick 0\n") {
			return fmt.Errorf("logs %q, %v", out, err)
		}
		return nil
	})
	out, err := n.logs("printer", &corev1.PodLogOptions{Container: "main", TailLines: ptr.To[int64](1)})
	if err != nil || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "tick ") {
		t.Fatalf("tail 1: %q, %v", out, err)
	}
	out, err = n.logs("printer", &corev1.PodLogOptions{Timestamps: true, LimitBytes: ptr.To[int64](200)})
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(out, "\n")
	ts, msg, _ := strings.Cut(first, " ")
	if _, perr := time.Parse(time.RFC3339Nano, ts); perr != nil || msg != "one" {
		t.Fatalf("timestamps: first line %q", first)
	}
	if len(out) > 200 {
		t.Fatalf("limitBytes 200: got %d bytes", len(out))
	}

	// Follow from the last line: the next tick is printed after the
	// kubelet read the file, so it reaches the client only by following.
	rc, err := n.client.CoreV1().Pods("default").GetLogs("printer", &corev1.PodLogOptions{Follow: true, TailLines: ptr.To[int64](1)}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(rc)
	l1, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var k int
	if _, err := fmt.Sscanf(l1, "tick %d", &k); err != nil {
		t.Fatalf("follow: first line %q", l1)
	}
	l2, err := r.ReadString('\n')
	if want := fmt.Sprintf("tick %d\n", k+1); err != nil || l2 != want {
		t.Fatalf("follow: next line %q (%v), want %q", l2, err, want)
	}
	rc.Close() // the client goes away mid-stream

	// Followed to the end, the stream ends when the container exits.
	done := make(chan string, 1)
	go func() {
		out, _ := n.logs("printer", &corev1.PodLogOptions{Follow: true})
		done <- out
	}()
	select {
	case out := <-done:
		if !strings.HasSuffix(out, "tick 39\n") {
			t.Fatalf("followed to the exit: ends %q", out[max(0, len(out)-40):])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not end when the container exited")
	}

	// previous: the exited attempt; the current one is the restart.
	pod := busyboxPod("restarter", corev1.RestartPolicyAlways,
		`n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo attempt $n; if [ $n -ge 2 ]; then exec sleep 3600; fi; exit 1`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	if _, err := n.client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 30*time.Second, "restarted pod logs", func() error {
		cur, err := n.logs("restarter", &corev1.PodLogOptions{})
		if err != nil || cur != "attempt 2\n" {
			return fmt.Errorf("current %q, %v", cur, err)
		}
		prev, err := n.logs("restarter", &corev1.PodLogOptions{Previous: true})
		if err != nil || prev != "attempt 1\n" {
			return fmt.Errorf("previous %q, %v", prev, err)
		}
		return nil
	})
	if _, err := n.logs("printer", &corev1.PodLogOptions{Previous: true}); err == nil || !strings.Contains(err.Error(), `previous terminated container "main" in pod "printer" not found`) {
		t.Errorf("previous of a pod that never restarted: %v", err)
	}

	// The kubelet serves only clients of the cluster CA, and answers 501
	// for what it does not implement.
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := anon.Get(base + "/containerLogs/default/printer/main"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate got %s", resp.Status)
	}
	cert, err := tls.X509KeyPair(certs.AdminCertPEM, certs.AdminKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	admin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}}
	resp, err := admin.Get(base + "/exec/default/printer/main?command=ls")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("exec: %s, want 501", resp.Status)
	}
	for _, name := range []string{"printer", "restarter"} {
		n.deleteAndWait(name)
	}
}
