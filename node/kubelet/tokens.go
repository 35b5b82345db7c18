package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// tokenManager gets the service account tokens of projected volumes
// through TokenRequest, bound to their pod, and keeps each until 80% of its
// lifetime has passed (or a day, whichever is first), as upstream's token
// manager does; the pod's periodic sync then writes the new one into the
// volume.
type tokenManager struct {
	client kubernetes.Interface
	now    func() time.Time

	mu    sync.Mutex
	cache map[tokenKey]*authenticationv1.TokenRequest
}

// tokenKey is what makes two token requests the same.
type tokenKey struct {
	namespace, serviceAccount string
	pod                       types.UID
	audience                  string
	expirationSeconds         int64
}

const (
	tokenMaxTTL    = 24 * time.Hour
	tokenMaxJitter = 10 * time.Second
	// tokenDefaultExpiration is the API's default for a projection that
	// names none.
	tokenDefaultExpiration = 3600
)

func newTokenManager(client kubernetes.Interface) *tokenManager {
	return &tokenManager{client: client, now: time.Now, cache: map[tokenKey]*authenticationv1.TokenRequest{}}
}

// token returns the token src asks for on behalf of pod.
func (m *tokenManager) token(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) ([]byte, error) {
	exp := int64(tokenDefaultExpiration)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	key := tokenKey{namespace: pod.Namespace, serviceAccount: pod.Spec.ServiceAccountName, pod: pod.UID, audience: src.Audience, expirationSeconds: exp}
	m.mu.Lock()
	cached := m.cache[key]
	m.pruneLocked()
	m.mu.Unlock()
	if cached != nil && !m.needsRefresh(cached) {
		return []byte(cached.Status.Token), nil
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	var out *authenticationv1.TokenRequest
	err := waitForSystemObject(ctx, func() (err error) {
		out, err = m.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, tr, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		// A token that is due for refresh but not expired still serves.
		if cached != nil && m.now().Before(cached.Status.ExpirationTimestamp.Time) {
			slog.Warn("kubelet cannot refresh service account token, keeping the current one", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			return []byte(cached.Status.Token), nil
		}
		return nil, fmt.Errorf("service account token for %s/%s: %w", pod.Namespace, pod.Spec.ServiceAccountName, err)
	}
	if out.Spec.ExpirationSeconds == nil {
		out.Spec.ExpirationSeconds = &exp
	}
	m.mu.Lock()
	m.cache[key] = out
	m.mu.Unlock()
	return []byte(out.Status.Token), nil
}

// systemObjectWait is how long a pod's volumes wait for what the control
// plane makes in every new namespace (the "default" service account,
// kube-root-ca.crt): a pod created right after its namespace can outrun
// those controllers, and failing would hold it up for a whole retry.
const systemObjectWait = 3 * time.Second

// waitForSystemObject calls f until it finds what it reads or
// systemObjectWait has passed.
func waitForSystemObject(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(systemObjectWait)
	for {
		err := f()
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// needsRefresh is upstream's rule: within 20% of the lifetime of expiry,
// or older than a day, each less a few seconds of jitter so that the pods
// of a node do not all refresh at once.
func (m *tokenManager) needsRefresh(tr *authenticationv1.TokenRequest) bool {
	exp := tr.Status.ExpirationTimestamp.Time
	ttl := time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
	jitter := time.Duration(rand.Float64() * float64(tokenMaxJitter))
	now := m.now()
	return now.After(exp.Add(-ttl).Add(tokenMaxTTL-jitter)) || now.After(exp.Add(-ttl/5-jitter))
}

// forget drops the tokens of a pod that is gone.
func (m *tokenManager) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.cache {
		if k.pod == uid {
			delete(m.cache, k)
		}
	}
}

// pruneLocked drops expired tokens, of pods long gone among them.
func (m *tokenManager) pruneLocked() {
	now := m.now()
	for k, tr := range m.cache {
		if now.After(tr.Status.ExpirationTimestamp.Time) {
			delete(m.cache, k)
		}
	}
}
