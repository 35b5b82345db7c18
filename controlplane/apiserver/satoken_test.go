package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
	"github.com/navarch/navarch/controlplane/storage/etcd"
)

// adminFallback authenticates every request no earlier authenticator took
// as an admin, so the tests can set things up without credentials.
type adminFallback struct{}

func (adminFallback) Authenticate(*http.Request) (*User, bool, error) {
	return &User{Name: "admin", Groups: []string{"system:masters"}}, true, nil
}

// lastUser records who the last authorized request was made by.
type lastUser struct {
	mu   sync.Mutex
	user *User
}

func (l *lastUser) Authorize(_ context.Context, u *User, _ string, _ request) (bool, string) {
	l.mu.Lock()
	l.user = u
	l.mu.Unlock()
	return true, ""
}

func (l *lastUser) get() *User {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.user
}

type tokenServer struct {
	tokens *ServiceAccountTokens
	users  *lastUser
	url    string
	admin  kubernetes.Interface
}

func startTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	member, err := etcd.StartEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokens, err := NewServiceAccountTokens(key, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	users := &lastUser{}
	var resources []*registry.Resource
	resources = append(resources, core.Resources()...)
	api, err := New(Config{Store: etcd.NewStore(member.Client), Resources: resources,
		Authenticators: []Authenticator{tokens, adminFallback{}}, Authorizer: users})
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
	admin := kubernetes.NewForConfigOrDie(&rest.Config{Host: hs.URL})
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &tokenServer{tokens: tokens, users: users, url: hs.URL, admin: admin}
}

// whoami makes a request with token and returns who the server took it for,
// or the request's error.
func (ts *tokenServer) whoami(token string) (*User, error) {
	c := kubernetes.NewForConfigOrDie(&rest.Config{Host: ts.url, BearerToken: token})
	if _, err := c.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{}); err != nil {
		return nil, err
	}
	return ts.users.get(), nil
}

func (ts *tokenServer) createToken(t *testing.T, sa string, spec authenticationv1.TokenRequestSpec) *authenticationv1.TokenRequest {
	t.Helper()
	tr, err := ts.admin.CoreV1().ServiceAccounts("default").CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", sa, err)
	}
	return tr
}

func decodeClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func mustUnauthorized(t *testing.T, ts *tokenServer, token, what string) {
	t.Helper()
	if u, err := ts.whoami(token); !apierrors.IsUnauthorized(err) {
		t.Fatalf("%s: want 401, got user %+v err %v", what, u, err)
	}
}

func TestTokenRequestDefaultsAndErrors(t *testing.T) {
	ts := startTokenServer(t)
	ctx := context.Background()
	sas := ts.admin.CoreV1().ServiceAccounts("default")
	_, err := sas.CreateToken(ctx, "missing", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `serviceaccounts "missing" not found`) {
		t.Fatalf("token for a missing service account: %v", err)
	}
	sa, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	before := time.Now().Truncate(time.Second)
	tr := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{})
	if got := tr.Status.ExpirationTimestamp.Time; got.Before(before.Add(time.Hour)) || got.After(time.Now().Add(time.Hour)) {
		t.Errorf("expirationTimestamp %v, want an hour from now", got)
	}
	if tr.Spec.ExpirationSeconds == nil || *tr.Spec.ExpirationSeconds != 3600 || len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != DefaultServiceAccountIssuer {
		t.Errorf("spec not defaulted: %+v", tr.Spec)
	}
	c := decodeClaims(t, tr.Status.Token)
	k, _ := c["kubernetes.io"].(map[string]any)
	saClaim, _ := k["serviceaccount"].(map[string]any)
	if c["iss"] != DefaultServiceAccountIssuer || c["sub"] != "system:serviceaccount:default:builder" ||
		c["exp"].(float64)-c["iat"].(float64) != 3600 || c["nbf"] != c["iat"] || c["jti"] == "" ||
		k["namespace"] != "default" || saClaim["name"] != "builder" || saClaim["uid"] != string(sa.UID) || k["pod"] != nil {
		t.Errorf("claims %v", c)
	}
	if aud, _ := c["aud"].([]any); len(aud) != 1 || aud[0] != DefaultServiceAccountIssuer {
		t.Errorf("aud %v", c["aud"])
	}

	short := int64(60)
	_, err = sas.CreateToken(ctx, "builder", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &short}}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes") {
		t.Fatalf("a 60 s token: %v", err)
	}
	_, err = sas.CreateToken(ctx, "builder", &authenticationv1.TokenRequest{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "must match the service account name if specified") {
		t.Fatalf("a TokenRequest named for another account: %v", err)
	}

	bind := func(kind, name, uid string) error {
		_, err := sas.CreateToken(ctx, "builder", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: kind, APIVersion: "v1", Name: name, UID: types.UID(uid)}}}, metav1.CreateOptions{})
		return err
	}
	if err := bind("Pod", "nopod", ""); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `pods "nopod" not found`) {
		t.Fatalf("bound to a missing pod: %v", err)
	}
	pods := ts.admin.CoreV1().Pods("default")
	other, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: corev1.PodSpec{ServiceAccountName: "default",
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bind("Pod", other.Name, ""); !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "pod running with different serviceaccount name") {
		t.Fatalf("bound to a pod of another service account: %v", err)
	}
	mine, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mine"}, Spec: corev1.PodSpec{ServiceAccountName: "builder",
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bind("Pod", mine.Name, "not-its-uid"); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "does not match the UID in record") {
		t.Fatalf("bound with a stale uid: %v", err)
	}
	if err := bind("ConfigMap", "cm", ""); !apierrors.IsBadRequest(err) {
		t.Fatalf("bound to a ConfigMap: %v", err)
	}
	if err := bind("Pod", mine.Name, string(mine.UID)); err != nil {
		t.Fatalf("bound to its pod: %v", err)
	}
}

func TestServiceAccountTokenAuthenticates(t *testing.T) {
	ts := startTokenServer(t)
	ctx := context.Background()
	sas := ts.admin.CoreV1().ServiceAccounts("default")
	if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{})
	u, err := ts.whoami(tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "system:serviceaccount:default:builder" || strings.Join(u.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:default,system:authenticated" {
		t.Fatalf("token authenticated as %+v", u)
	}

	// Tokens that are not this issuer's are left to the next authenticator.
	if u, err := ts.whoami("abcdef.0123456789abcdef"); err != nil || u.Name != "admin" {
		t.Fatalf("a bootstrap-style token: %+v %v", u, err)
	}
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := NewServiceAccountTokens(otherKey, "https://issuer.example", nil)
	foreign, err := other.sign(tokenClaims{Issuer: "https://issuer.example", Subject: "someone", Audience: audience{"https://issuer.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := ts.whoami(foreign); err != nil || u.Name != "admin" {
		t.Fatalf("another issuer's JWT: %+v %v", u, err)
	}

	// Tampered, wrong audience, expired.
	parts := strings.Split(tr.Status.Token, ".")
	claims := decodeClaims(t, tr.Status.Token)
	claims["sub"] = "system:serviceaccount:kube-system:admin"
	forged, _ := json.Marshal(claims)
	mustUnauthorized(t, ts, parts[0]+"."+base64.RawURLEncoding.EncodeToString(forged)+"."+parts[2], "a tampered token")
	mustUnauthorized(t, ts, parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(make([]byte, 64)), "a token with a zero signature")
	elsewhere := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{Audiences: []string{"vault"}})
	mustUnauthorized(t, ts, elsewhere.Status.Token, "a token for another audience")
	obj, _ := ts.admin.CoreV1().ServiceAccounts("default").Get(ctx, "builder", metav1.GetOptions{})
	expired, err := ts.tokens.issue(obj, tokenBinding{}, ts.tokens.audiences, time.Now().Add(-2*time.Hour), time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, ts, expired, "an expired token")

	// A token bound to a pod lives as long as the pod.
	pod, err := ts.admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{ServiceAccountName: "builder",
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podToken := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "p"}})
	k, _ := decodeClaims(t, podToken.Status.Token)["kubernetes.io"].(map[string]any)
	if p, _ := k["pod"].(map[string]any); p["name"] != "p" || p["uid"] != string(pod.UID) {
		t.Fatalf("pod claim %v", k)
	}
	if u, err := ts.whoami(podToken.Status.Token); err != nil || u.Name != "system:serviceaccount:default:builder" {
		t.Fatalf("pod-bound token: %+v %v", u, err)
	}
	zero := int64(0)
	if err := ts.admin.CoreV1().Pods("default").Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, ts, podToken.Status.Token, "a token of a deleted pod")
	if _, err := ts.whoami(tr.Status.Token); err != nil {
		t.Fatalf("the unbound token stopped working with the pod: %v", err)
	}

	// A token bound to a node lives as long as the node.
	if _, err := ts.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nodeToken := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: "n1"}})
	if u, err := ts.whoami(nodeToken.Status.Token); err != nil || u.Name != "system:serviceaccount:default:builder" {
		t.Fatalf("node-bound token: %+v %v", u, err)
	}
	if err := ts.admin.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, ts, nodeToken.Status.Token, "a token of a deleted node")

	// ... and every token as long as its service account, not a namesake.
	if err := sas.Delete(ctx, "builder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, ts, tr.Status.Token, "a token of a deleted service account")
	if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, ts, tr.Status.Token, "a token of a re-created service account")
}

// The kubelet's default volume asks for 3607 s: the token is signed for a
// year, with warnafter at the hour, while the response says the hour.
func TestTokenRequestExtendsTheKubeletDefault(t *testing.T) {
	ts := startTokenServer(t)
	ctx := context.Background()
	if _, err := ts.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node, _ := ts.admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if _, err := ts.admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := int64(3607)
	tr := ts.createToken(t, "default", authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp,
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "p"}})
	c := decodeClaims(t, tr.Status.Token)
	k := c["kubernetes.io"].(map[string]any)
	if c["exp"].(float64)-c["iat"].(float64) != 365*24*3600 || k["warnafter"].(float64)-c["iat"].(float64) != 3607 {
		t.Errorf("claims %v", c)
	}
	if n, _ := k["node"].(map[string]any); n["name"] != "n1" || n["uid"] != string(node.UID) {
		t.Errorf("node claim %v", k["node"])
	}
	if left := time.Until(tr.Status.ExpirationTimestamp.Time); left > 3607*time.Second || left < 3500*time.Second {
		t.Errorf("expirationTimestamp %v from now, want 3607 s", left)
	}
}

// The discovery document and key set let a verifier outside the cluster
// check a token with nothing but them.
func TestServiceAccountIssuerDiscovery(t *testing.T) {
	ts := startTokenServer(t)
	ctx := context.Background()
	if _, err := ts.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := ts.createToken(t, "builder", authenticationv1.TokenRequestSpec{}).Status.Token
	getJSON := func(path, wantType string, into any) {
		t.Helper()
		resp, err := http.Get(ts.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != wantType {
			t.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	var doc map[string]any
	getJSON("/.well-known/openid-configuration", "application/json", &doc)
	if doc["issuer"] != DefaultServiceAccountIssuer || !strings.HasSuffix(doc["jwks_uri"].(string), "/openid/v1/jwks") ||
		fmt.Sprint(doc["id_token_signing_alg_values_supported"]) != "[ES256]" {
		t.Errorf("discovery document %v", doc)
	}
	var set struct{ Keys []jwk }
	getJSON("/openid/v1/jwks", "application/jwk-set+json", &set)
	if len(set.Keys) != 1 || set.Keys[0].Kty != "EC" || set.Keys[0].Crv != "P-256" || set.Keys[0].Use != "sig" {
		t.Fatalf("key set %+v", set)
	}
	k := set.Keys[0]
	x, _ := base64.RawURLEncoding.DecodeString(k.X)
	y, _ := base64.RawURLEncoding.DecodeString(k.Y)
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	parts := strings.Split(token, ".")
	var header struct{ Alg, Kid string }
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(h, &header); err != nil || header.Kid != k.Kid || header.Alg != "ES256" {
		t.Fatalf("token header %s, key id %s", h, k.Kid)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("the token does not verify with the published key")
	}
}
