package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// tokenClaims decodes the payload of a JWT.
func tokenClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a JWT", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// asToken runs kubectl against s with only a bearer token (no client
// certificate) and the cluster CA.
func (s *server) asToken(c client, token string, args ...string) result {
	return s.kubectl(c, "", nil, append([]string{"--kubeconfig", os.DevNull, "--server", s.url(),
		"--certificate-authority", filepath.Join(s.dataDir, "pki", "ca.crt"), "--token", token}, args...)...)
}

// kubectl create token with every client: defaults, --audience,
// --duration, --bound-object-*, upstream's errors; the token, and that of
// a kubernetes.io/service-account-token Secret, works as kubectl's
// credential until its service account goes. Every namespace
// has kube-root-ca.crt, and pods get the kube-api-access volume.
func TestServiceAccountTokensWithKubectl(t *testing.T) {
	s := startServer(t)
	for i, c := range clients(t) {
		t.Run(c.name, func(t *testing.T) {
			ns := fmt.Sprintf("tokens-%d", i)
			s.must(t, c, "create", "namespace", ns)
			s.must(t, c, "-n", ns, "create", "serviceaccount", "builder")
			token := s.must(t, c, "-n", ns, "create", "token", "builder")
			claims := tokenClaims(t, token)
			if claims["sub"] != "system:serviceaccount:"+ns+":builder" || claims["iss"] != "https://kubernetes.default.svc.cluster.local" ||
				claims["exp"].(float64)-claims["iat"].(float64) != 3600 {
				t.Errorf("claims %v", claims)
			}
			if r := s.asToken(c, strings.TrimSpace(token), "-n", ns, "get", "serviceaccounts", "-o", "name"); r.err != nil || !strings.Contains(r.stdout, "serviceaccount/builder") {
				t.Errorf("kubectl with the token: %s", r)
			}
			if r := s.asToken(c, strings.TrimSpace(token)+"x", "get", "pods"); r.err == nil || !strings.Contains(r.stderr, "Unauthorized") {
				t.Errorf("kubectl with a broken token: %s", r)
			}

			other := tokenClaims(t, s.must(t, c, "-n", ns, "create", "token", "builder", "--audience", "vault", "--duration", "2h"))
			if aud, _ := other["aud"].([]any); len(aud) != 1 || aud[0] != "vault" || other["exp"].(float64)-other["iat"].(float64) != 7200 {
				t.Errorf("--audience vault --duration 2h: %v", other)
			}
			for _, bad := range []struct {
				args []string
				want string
			}{
				{[]string{"create", "token", "nobody"}, `serviceaccounts "nobody" not found`},
				{[]string{"create", "token", "builder", "--duration", "1m"}, "may not specify a duration less than 10 minutes"},
				{[]string{"create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "nopod"}, `pods "nopod" not found`},
			} {
				r := s.kubectl(c, "", nil, append([]string{"-n", ns}, bad.args...)...)
				if r.err == nil || !strings.Contains(r.stderr, bad.want) {
					t.Errorf("kubectl %s: want %q, got %s", strings.Join(bad.args, " "), bad.want, r)
				}
			}

			// A pod of the account: it gets the token volume, and a token
			// bound to it lives as long as it does.
			s.must(t, c, "-n", ns, "run", "p", "--image=busybox", "--restart=Never", "--overrides", `{"spec":{"serviceAccountName":"builder"}}`)
			vol := s.must(t, c, "-n", ns, "get", "pod", "p", "-o", `jsonpath={.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath} {.spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds}`)
			if f := strings.Fields(vol); len(f) != 3 || !strings.HasPrefix(f[0], "kube-api-access-") || f[1] != "/var/run/secrets/kubernetes.io/serviceaccount" || f[2] != "3607" {
				t.Errorf("pod's token volume: %q", vol)
			}
			bound := strings.TrimSpace(s.must(t, c, "-n", ns, "create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "p"))
			if k, _ := tokenClaims(t, bound)["kubernetes.io"].(map[string]any); k["pod"] == nil {
				t.Errorf("bound token's claims %v", k)
			}
			if r := s.asToken(c, bound, "-n", ns, "get", "pods"); r.err != nil {
				t.Errorf("kubectl with the pod-bound token: %s", r)
			}
			s.must(t, c, "-n", ns, "delete", "pod", "p", "--grace-period=0", "--force")
			eventually(t, 10*time.Second, func() error {
				if r := s.asToken(c, bound, "-n", ns, "get", "pods"); r.err == nil || !strings.Contains(r.stderr, "Unauthorized") {
					return fmt.Errorf("the token of a deleted pod: %s", r)
				}
				return nil
			})
			// A long-lived token in a Secret, as upstream's docs have users
			// make one: filled in by the tokens controller.
			if r := s.kubectl(c, fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"builder-token","namespace":%q,
				"annotations":{"kubernetes.io/service-account.name":"builder"}},"type":"kubernetes.io/service-account-token"}`, ns), nil, "apply", "-f", "-"); r.err != nil {
				t.Fatalf("create the token secret: %s", r)
			}
			var secretToken string
			eventually(t, 10*time.Second, func() error {
				r := s.kubectl(c, "", nil, "-n", ns, "get", "secret", "builder-token", "-o", "jsonpath={.data.token}")
				b, err := base64.StdEncoding.DecodeString(r.stdout)
				if r.err != nil || err != nil || len(b) == 0 {
					return fmt.Errorf("secret's token: %s", r)
				}
				secretToken = string(b)
				return nil
			})
			if r := s.asToken(c, secretToken, "-n", ns, "get", "secrets", "-o", "name"); r.err != nil || !strings.Contains(r.stdout, "secret/builder-token") {
				t.Errorf("kubectl with the secret's token: %s", r)
			}

			s.must(t, c, "-n", ns, "delete", "serviceaccount", "builder")
			if r := s.asToken(c, strings.TrimSpace(token), "get", "pods"); r.err == nil || !strings.Contains(r.stderr, "Unauthorized") {
				t.Errorf("the token of a deleted service account: %s", r)
			}
			eventually(t, 10*time.Second, func() error {
				if r := s.kubectl(c, "", nil, "-n", ns, "get", "secret", "builder-token"); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
					return fmt.Errorf("the secret of a deleted service account: %s", r)
				}
				if r := s.asToken(c, secretToken, "get", "pods"); r.err == nil || !strings.Contains(r.stderr, "Unauthorized") {
					return fmt.Errorf("the secret's token of a deleted service account: %s", r)
				}
				return nil
			})
			// The namespace has the root CA, equal to the cluster's.
			ca, err := os.ReadFile(filepath.Join(s.dataDir, "pki", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, func() error {
				r := s.kubectl(c, "", nil, "-n", ns, "get", "configmap", "kube-root-ca.crt", "-o", `jsonpath={.data.ca\.crt}`)
				if r.err != nil || r.stdout != string(ca) {
					return fmt.Errorf("kube-root-ca.crt: %s", r)
				}
				return nil
			})
		})
	}

	// The signing key is kept in the data dir: tokens outlive a restart.
	c := clients(t)[0]
	s.must(t, c, "create", "serviceaccount", "survivor")
	token := strings.TrimSpace(s.must(t, c, "create", "token", "survivor"))
	s.stop()
	s.start()
	if r := s.asToken(c, token, "get", "serviceaccount", "survivor", "-o", "name"); r.err != nil {
		t.Errorf("a token from before the restart: %s", r)
	}
}

// A pod on a real node reads its token, the cluster CA and its namespace
// at /var/run/secrets/kubernetes.io/serviceaccount; the token it read is
// good for kubectl.
func TestNodeServiceAccountToken(t *testing.T) {
	n := startNodeCluster(t)
	a := n.startAgent("e2e-sa", 0)
	s, c := n.s, n.kc
	dir := "/var/run/secrets/kubernetes.io/serviceaccount"
	n.apply(nodeBusyboxPod("reader", a.name, fmt.Sprintf("echo ns=$(cat %[1]s/namespace); cat %[1]s/ca.crt; echo token=$(cat %[1]s/token)", dir), true))
	n.waitPod("reader", 30*time.Second, func(p *corev1.Pod) error { return nodeRunning(p) })
	var logs string
	eventually(t, 10*time.Second, func() error {
		logs = s.must(t, c, "logs", "reader")
		if !strings.Contains(logs, "token=") {
			return fmt.Errorf("logs so far: %q", logs)
		}
		return nil
	})
	ca, err := os.ReadFile(filepath.Join(s.dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs, "ns=default\n") || !strings.Contains(logs, string(ca)) {
		t.Errorf("pod's output:\n%s", logs)
	}
	token := strings.TrimSpace(logs[strings.Index(logs, "token=")+len("token="):])
	claims := tokenClaims(t, token)
	if k, _ := claims["kubernetes.io"].(map[string]any); claims["sub"] != "system:serviceaccount:default:default" || k["pod"] == nil || k["node"] == nil {
		t.Errorf("the pod's token's claims %v", claims)
	}
	if r := s.asToken(c, token, "get", "pod", "reader", "-o", "name"); r.err != nil || strings.TrimSpace(r.stdout) != "pod/reader" {
		t.Errorf("kubectl with the pod's token: %s", r)
	}
}
