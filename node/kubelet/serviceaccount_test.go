package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/admission/serviceaccount"
	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/rootcacert"
	"github.com/navarch/navarch/internal/pki"
)

// A pod reads its service account token, the cluster CA and its namespace
// at the upstream path, put there by ServiceAccount admission, the root CA
// publisher and the kubelet's TokenRequest; the token it read
// authenticates against the API server as its service account.
func TestKubeletServiceAccountTokenVolume(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokens, err := apiserver.NewServiceAccountTokens(key, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *apiserver.Config) {
		c.Admission = append(c.Admission, serviceaccount.New())
		c.Authenticators = append([]apiserver.Authenticator{tokens}, c.Authenticators...)
	})
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	certs, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	go rootcacert.New(n.client, informers.NewSharedInformerFactory(n.client, 0), certs.CACertPEM).Run(ctx)
	if _, err := n.client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := serviceaccount.MountPath
	pod := busyboxPod("sa", corev1.RestartPolicyNever,
		fmt.Sprintf("cat %[1]s/token; echo; echo ns=$(cat %[1]s/namespace); cat %[1]s/ca.crt; stat -L -c %%a %[1]s/token", dir))
	done, _ := n.createAndWait(pod, corev1.PodSucceeded)
	lines := strings.Split(logText(t, filepath.Join(n.dataDir, "pods", string(done.UID), "logs", "main", "0.log")), "\n")
	if len(lines) < 4 {
		t.Fatalf("output %q", lines)
	}
	token := lines[0]
	if lines[1] != "ns=default" {
		t.Errorf("namespace file: %q", lines[1])
	}
	if ca := strings.Join(lines[2:len(lines)-1], "\n"); ca != strings.TrimSpace(string(certs.CACertPEM)) {
		t.Errorf("ca.crt %q, want the cluster CA", ca)
	}
	if mode := lines[len(lines)-1]; mode != "644" {
		t.Errorf("token file mode %s, want 644 (defaultMode 420)", mode)
	}

	// The token is bound to the pod and names its node.
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", token)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Sub string `json:"sub"`
		K   struct {
			Pod  struct{ Name, UID string }
			Node struct{ Name string }
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Sub != "system:serviceaccount:default:default" || claims.K.Pod.Name != "sa" || claims.K.Pod.UID != string(done.UID) || claims.K.Node.Name != n.node {
		t.Errorf("claims %s", payload)
	}

	// It authenticates as the service account, over HTTP as well as
	// directly; a token that is not one fails.
	host := n.client.(*kubernetes.Clientset).CoreV1().RESTClient().Get().URL().Host
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/api/v1/namespaces/default/pods", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	u, ok, err := tokens.Authenticate(req)
	if err != nil || !ok || u.Name != "system:serviceaccount:default:default" {
		t.Fatalf("the pod's token authenticated as %+v, %v, %v", u, ok, err)
	}
	as := kubernetes.NewForConfigOrDie(&rest.Config{Host: "http://" + host, BearerToken: token})
	if _, err := as.CoreV1().Pods("default").Get(ctx, "sa", metav1.GetOptions{}); err != nil {
		t.Fatalf("the pod's token against the API server: %v", err)
	}
	forged := kubernetes.NewForConfigOrDie(&rest.Config{Host: "http://" + host, BearerToken: parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))})
	if _, err := forged.CoreV1().Pods("default").Get(ctx, "sa", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("a forged token: %v", err)
	}
	// Once the pod is gone, so is its token.
	n.deleteAndWait("sa")
	if _, err := as.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("the token of a deleted pod: %v", err)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}

// A pod created in a namespace before the control plane gave that
// namespace its "default" service account and kube-root-ca.crt waits for
// them instead of failing its start.
func TestKubeletTokenVolumeOutrunsNamespaceSetup(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokens, err := apiserver.NewServiceAccountTokens(key, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *apiserver.Config) {
		c.Admission = append(c.Admission, serviceaccount.New())
		c.Authenticators = append([]apiserver.Authenticator{tokens}, c.Authenticators...)
	})
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx := context.Background()
	if _, err := n.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("early", corev1.RestartPolicyNever, "cat "+serviceaccount.MountPath+"/namespace")
	pod.Namespace = "fresh"
	pods := n.client.CoreV1().Pods("fresh")
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What the serviceaccount and root CA controllers would make, made
	// late on purpose, after the kubelet has had time to get to the volume.
	time.Sleep(500 * time.Millisecond)
	if _, err := n.client.CoreV1().ServiceAccounts("fresh").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.client.CoreV1().ConfigMaps("fresh").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: rootCAConfigMap},
		Data: map[string]string{"ca.crt": "ca"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 30*time.Second, "pod early succeeded", func() error {
		p, err := pods.Get(ctx, "early", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	events, err := n.client.CoreV1().Events("fresh").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Reason == "Failed" {
			t.Errorf("the pod's start failed on the way: %s", e.Message)
		}
	}
	zero := int64(0)
	if err := pods.Delete(ctx, "early", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}

// A running container sees updates of its configMap and secret volumes,
// and of the labels of its downward API volume, as upstream's kubelet
// propagates them.
func TestKubeletVolumeUpdatesPropagate(t *testing.T) {
	n := startNode(t)
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx := context.Background()
	cms, secrets, pods := n.client.CoreV1().ConfigMaps("default"), n.client.CoreV1().Secrets("default"), n.client.CoreV1().Pods("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"v": "one"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"}, Data: map[string][]byte{"v": []byte("one")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("watcher", corev1.RestartPolicyAlways,
		`trap 'exit 0' TERM; while true; do echo "cm=$(cat /cfg/v) sec=$(cat /sec/v) $(cat /info/labels | tr '\n' ' ')" > /out/now; sleep 0.1; done`)
	hostDir := t.TempDir()
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
		{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}, {Name: "sec", MountPath: "/sec"},
		{Name: "info", MountPath: "/info"}, {Name: "out", MountPath: "/out"}}
	n.createAndWait(pod, corev1.PodRunning)
	seen := func(want string) func() error {
		return func() error {
			b, err := os.ReadFile(filepath.Join(hostDir, "now"))
			if err != nil {
				return err
			}
			if got := strings.TrimSpace(string(b)); got != want {
				return fmt.Errorf("container sees %q, want %q", got, want)
			}
			return nil
		}
	}
	apiservertest.Eventually(t, 10*time.Second, "first contents", seen(`cm=one sec=one app="watcher"`))

	cm, _ := cms.Get(ctx, "cfg", metav1.GetOptions{})
	cm.Data["v"] = "two"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec, _ := secrets.Get(ctx, "sec", metav1.GetOptions{})
	sec.Data["v"] = []byte("two")
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The label change is a pod event: the kubelet syncs the pod at once
	// instead of at its next periodic resync, and rewrites every volume.
	p, _ := pods.Get(ctx, "watcher", metav1.GetOptions{})
	p.Labels["tier"] = "x"
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "updated contents", seen(`cm=two sec=two app="watcher" tier="x"`))
	n.deleteAndWait("watcher")
}
