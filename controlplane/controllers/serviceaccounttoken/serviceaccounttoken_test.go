package serviceaccounttoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/serviceaccounttoken"
)

const ca = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

func TestServiceAccountTokenSecrets(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokens, err := apiserver.NewServiceAccountTokens(key, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := apiservertest.StartConfig(t, func(c *apiserver.Config) {
		c.Authenticators = append([]apiserver.Authenticator{tokens}, c.Authenticators...)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go serviceaccounttoken.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0), tokens, []byte(ca)).Run(ctx)
	sa, err := s.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secrets := s.Client.CoreV1().Secrets("default")
	tokenSecret := func(name, sa string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}},
			Type: corev1.SecretTypeServiceAccountToken}
	}
	if _, err := secrets.Create(ctx, tokenSecret("robot-token", "robot"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var token string
	apiservertest.Eventually(t, 10*time.Second, "the secret filled in", func() error {
		sec, err := secrets.Get(ctx, "robot-token", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(sec.Data["token"]) == 0 || string(sec.Data["ca.crt"]) != ca || string(sec.Data["namespace"]) != "default" ||
			sec.Annotations[corev1.ServiceAccountUIDKey] != string(sa.UID) {
			return fmt.Errorf("secret %v %v", sec.Annotations, sec.Data)
		}
		token = string(sec.Data["token"])
		return nil
	})
	authenticate := func(token string) (*apiserver.User, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/api", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		u, ok, err := tokens.Authenticate(req)
		if err == nil && !ok {
			err = fmt.Errorf("not taken as a service account token")
		}
		return u, err
	}
	if u, err := authenticate(token); err != nil || u.Name != "system:serviceaccount:default:robot" {
		t.Fatalf("the secret's token: %+v %v", u, err)
	}
	as := kubernetes.NewForConfigOrDie(&rest.Config{Host: s.Config.Host, BearerToken: token})
	if _, err := as.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the secret's token against the API server: %v", err)
	}
	// A token the secret no longer holds is invalid.
	sec, _ := secrets.Get(ctx, "robot-token", metav1.GetOptions{})
	forged, _ := tokens.LegacyToken("default", "robot", sa.UID, "robot-token")
	if _, err := authenticate(forged); err == nil {
		t.Fatal("a token the secret does not hold was accepted")
	}

	// A secret for an account that does not exist goes.
	if _, err := secrets.Create(ctx, tokenSecret("ghost-token", "ghost"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gone := func(name string) func() error {
		return func() error {
			if _, err := secrets.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("secret %s still there: %v", name, err)
			}
			return nil
		}
	}
	apiservertest.Eventually(t, 10*time.Second, "the ghost's secret deleted", gone("ghost-token"))

	// So does the secret of a deleted account, and its token with it.
	if err := s.Client.CoreV1().ServiceAccounts("default").Delete(ctx, "robot", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 10*time.Second, "the robot's secret deleted", gone(sec.Name))
	if _, err := authenticate(token); err == nil {
		t.Fatal("the token of a deleted account was accepted")
	}
	if _, err := as.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("the token of a deleted account against the API server: %v", err)
	}
}
