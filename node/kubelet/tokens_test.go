package kubelet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The token manager asks once, keeps the token until 80% of its lifetime
// (less the jitter) has passed, then asks again; a failed refresh keeps a
// token that has not expired.
func TestTokenManagerRefreshesBeforeExpiry(t *testing.T) {
	client := fake.NewSimpleClientset()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	issued, failing := 0, false
	var last *authenticationv1.TokenRequest
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "token" {
			return false, nil, nil
		}
		if failing {
			return true, nil, errors.New("api server away")
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		last = tr.DeepCopy()
		issued++
		tr.Status = authenticationv1.TokenRequestStatus{Token: fmt.Sprintf("token-%d", issued),
			ExpirationTimestamp: metav1.NewTime(now.Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second))}
		return true, tr, nil
	})
	m := newTokenManager(client)
	m.now = func() time.Time { return now }
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1"}, Spec: corev1.PodSpec{ServiceAccountName: "sa"}}
	exp := int64(1000)
	src := &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp, Audience: "vault"}
	get := func() string {
		t.Helper()
		b, err := m.token(context.Background(), pod, src)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	start := now
	if got := get(); got != "token-1" {
		t.Fatalf("first token %q", got)
	}
	ref := last.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || ref.Name != "p" || ref.UID != "uid-1" || len(last.Spec.Audiences) != 1 || last.Spec.Audiences[0] != "vault" || *last.Spec.ExpirationSeconds != 1000 {
		t.Fatalf("token request %+v", last.Spec)
	}
	now = start.Add(700 * time.Second)
	if got := get(); got != "token-1" {
		t.Fatalf("at 70%% of its lifetime: %q, want the cached token", got)
	}
	now = start.Add(801 * time.Second)
	if got := get(); got != "token-2" {
		t.Fatalf("past 80%% of its lifetime: %q, want a new token", got)
	}
	// Another audience is another token.
	other := *src
	other.Audience = ""
	if b, _ := m.token(context.Background(), pod, &other); string(b) != "token-3" || len(last.Spec.Audiences) != 0 {
		t.Fatalf("token for the API's audience %q (audiences %v)", b, last.Spec.Audiences)
	}
	// A pod that is gone takes its tokens along.
	m.forget("other-pod")
	if len(m.cache) != 2 {
		t.Fatalf("forgetting another pod dropped tokens: %d left", len(m.cache))
	}
	defer func() {
		m.forget(pod.UID)
		if len(m.cache) != 0 {
			t.Errorf("%d tokens left after the pod was forgotten", len(m.cache))
		}
	}()
	failing = true
	now = start.Add(801*time.Second + 900*time.Second)
	if got := get(); got != "token-2" {
		t.Fatalf("failed refresh of a live token: %q, want it kept", got)
	}
	now = start.Add(801*time.Second + 1001*time.Second)
	if _, err := m.token(context.Background(), pod, src); err == nil {
		t.Fatal("an expired token was served when the refresh failed")
	}
}
