package apiserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchPods fills a server with n pods of typical size.
func benchPods(b *testing.B, s *testServer, n int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"app": "bench"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app:1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}}}}}}
				if _, err := s.client.CoreV1().Pods("test").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
}

func get(b *testing.B, url string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
}

// BenchmarkReads measures GET of one pod and LIST of 500 pods with 10,000
// pods stored, through HTTP on loopback (no TLS: the server's own cost).
func BenchmarkReads(b *testing.B) {
	s := startServer(b)
	benchPods(b, s, 10000)
	b.Run("get", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, fmt.Sprintf("%s/api/v1/namespaces/test/pods/pod-%d", s.url, i%10000))
		}
	})
	b.Run("list500", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, s.url+"/api/v1/namespaces/test/pods?limit=500")
		}
	})
}
