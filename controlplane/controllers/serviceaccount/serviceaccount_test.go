package serviceaccount_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/serviceaccount"
)

func TestEveryNamespaceGetsDefaultServiceAccount(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go serviceaccount.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait := func(ns string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := s.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("no default service account in %s: %v", ns, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("default")
	wait("team")
	// Deleted, it comes back.
	if err := s.Client.CoreV1().ServiceAccounts("team").Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	wait("team")
}
