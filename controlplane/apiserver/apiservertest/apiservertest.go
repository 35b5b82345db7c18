// Package apiservertest starts a real API server over a real embedded etcd
// member for tests of the components that are its clients (scheduler,
// controllers, hollow nodes). It serves plain HTTP on loopback and trusts
// every request as an admin: TLS and authentication are covered by the
// end-to-end tests of the real binary.
package apiservertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/apps"
	"github.com/navarch/navarch/controlplane/registry/batch"
	"github.com/navarch/navarch/controlplane/registry/core"
	"github.com/navarch/navarch/controlplane/registry/others"
	"github.com/navarch/navarch/controlplane/storage/etcd"
)

type trustAll struct{}

func (trustAll) Authenticate(*http.Request) (*apiserver.User, bool, error) {
	return &apiserver.User{Name: "admin", Groups: []string{"system:masters"}}, true, nil
}

// Server is a running test API server.
type Server struct {
	Config *rest.Config
	Client kubernetes.Interface
	API    *apiserver.Server
}

// Start starts a server with every resource and the system namespaces, and
// the admission steps given; it stops when the test ends.
func Start(t testing.TB, admission ...apiserver.Admitter) *Server {
	t.Helper()
	return StartConfig(t, func(c *apiserver.Config) { c.Admission = admission })
}

// StartConfig is Start with edit applied to the server's Config first (e.g.
// the kubelet client certificate of pods/log).
func StartConfig(t testing.TB, edit func(*apiserver.Config)) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	member, err := etcd.StartEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var resources []*registry.Resource
	for _, g := range [][]*registry.Resource{core.Resources(), apps.Resources(), batch.Resources(), others.Resources()} {
		resources = append(resources, g...)
	}
	acfg := apiserver.Config{Store: etcd.NewStore(member.Client), Resources: resources, Authenticators: []apiserver.Authenticator{trustAll{}}}
	edit(&acfg)
	api, err := apiserver.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Start(ctx); err != nil {
		t.Fatal(err)
	}
	api.MarkReady()
	hs := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		cancel()
		member.Close()
	})
	cfg := &rest.Config{Host: hs.URL, QPS: 1000, Burst: 2000}
	client := kubernetes.NewForConfigOrDie(cfg)
	for _, ns := range []string{"default", "kube-system", "kube-node-lease"} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &Server{Config: cfg, Client: client, API: api}
}

// Eventually polls f until it returns nil, failing the test with what and
// f's last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
